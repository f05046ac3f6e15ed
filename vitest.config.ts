import { defineConfig } from "vitest/config"

export default defineConfig({
  // The package's own name resolves to its sources in tests (consumers get `dist/`).
  resolve: { conditions: ["pyrycode-source"] },
  ssr: { resolve: { conditions: ["pyrycode-source"] } },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/BuildService.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks"
  }
})
