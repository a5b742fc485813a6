import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    // A test that asserts nothing cannot fail: one that cannot run here says why and skips.
    expect: { requireAssertions: true },
  },
});
