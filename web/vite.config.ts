import { defineConfig, searchForWorkspaceRoot } from "vite";

// No React plugin: esbuild compiles JSX with the automatic runtime.
export default defineConfig({
  esbuild: {
    jsx: "automatic",
  },
  build: {
    outDir: "dist",
    target: "es2022",
    sourcemap: true,
    // matrix-js-sdk and livekit-client are large; the app is one page.
    chunkSizeWarningLimit: 2500,
  },
  // The crypto WASM finds its .wasm beside its module: pre-bundled into .vite/deps it would not.
  optimizeDeps: {
    exclude: ["@matrix-org/matrix-sdk-crypto-wasm"],
  },
  server: {
    port: 5173,
    // The page imports the shared contract files (../proto/contract/*.json): the dev server may
    // serve them, and nothing else outside web/.
    fs: {
      allow: [searchForWorkspaceRoot(process.cwd()), "../proto/contract"],
    },
  },
});
