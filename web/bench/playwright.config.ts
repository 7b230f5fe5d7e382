import { defineConfig } from "@playwright/test";
import base from "../playwright.config";

/** Benchmarks driven by real browsers (bench/cpu at the repo root); not part of the tests. */
export default defineConfig({
  ...base,
  testDir: ".",
  testMatch: /.*\.bench\.ts/,
  timeout: 900_000,
  reporter: [["list"]],
  outputDir: "../test-results/bench",
  use: { ...base.use, trace: "off", screenshot: "off" },
});
