import { defineConfig } from 'vitest/config';

// Two projects: unit tests (fast, fakes allowed, under test/unit) and integration/e2e
// tests that start real servers (Temporal dev server, Postgres, slapd). test/workflows runs the
// real workflow code on that dev server with fake activities (no time-skipping server here).
// Integration files run one at a time: each starts its own servers and the machine has two cores.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/replay/**/*.test.ts'],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/e2e/**/*.test.ts', 'test/workflows/**/*.test.ts', 'test/model/**/*.test.ts'],
          globalSetup: ['test/helpers/global-setup.ts'],
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
