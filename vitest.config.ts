import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    globalSetup: ['tests/global-setup.ts'],
    // Native ops use every core; running test files in parallel would only oversubscribe.
    fileParallelism: false,
    testTimeout: 60_000,
  },
});
