import { defineConfig } from "vitest/config";

// The page's pure logic, in Node, in seconds; the browser tests (e2e/, Playwright) are apart.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
