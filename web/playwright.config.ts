import { defineConfig } from "@playwright/test";

/**
 * End-to-end tests against the running dev stack (`make up` at the repo root): the control
 * plane serves web/dist and the REST API at KOINOS_WEB_URL (default http://localhost:8080).
 * Uses Debian's Chromium with fake camera/microphone; no browser is downloaded.
 */
export default defineConfig({
  testDir: "./e2e",
  // LiveKit on a loaded 2-core box can be slow to connect.
  timeout: 180_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  reporter: [["list"], ["html", { outputFolder: "playwright-report", open: "never" }]],
  outputDir: "test-results",
  use: {
    baseURL: process.env.KOINOS_WEB_URL ?? "http://localhost:8080",
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    permissions: ["camera", "microphone"],
    launchOptions: {
      executablePath: process.env.KOINOS_CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        // Two fake cameras (the default is one) so that the camera picker has a choice.
        "--use-fake-device-for-media-stream=device-count=2",
        "--use-fake-ui-for-media-stream",
        "--disable-background-networking",
        "--disable-component-update",
        "--autoplay-policy=no-user-gesture-required",
      ],
    },
  },
});
