import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

// wrangler.toml's [assets] directory must exist for wrangler to read the config (the workerd project does);
// it is build output (npm run build:web), so a clean clone has none: an empty one serves no page, and the
// browser project's server (`hymba dev`) builds the page into it.
mkdirSync(join(import.meta.dirname, 'workers', 'playground', 'dist'), { recursive: true });

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'node',
          include: ['tests/node/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 300_000,
          pool: 'forks',
        },
      },
      {
        // inside workerd (Durable Objects with SQLite, R2) via @cloudflare/vitest-pool-workers, configured as
        // wrangler.toml says with three test-only changes:
        // - the entry is tests/workerd/test-worker.ts: the production Worker plus the test subclasses of its
        //   Durable Objects (tests/workerd/test-objects.ts: load reports, raw logits, fault injection), which
        //   SESSIONS and STAGES are bound to; `npm start` and deployments never see them
        // - LOG_LEVEL error: the one-line-per-request logs would bury test output (the log tests set their own)
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            main: './tests/workerd/test-worker.ts',
            miniflare: {
              bindings: { LOG_LEVEL: 'error' },
              durableObjects: {
                SESSIONS: { className: 'TestSessionDO', useSQLite: true },
                STAGES: { className: 'TestStageDO', useSQLite: true },
              },
            },
          }),
        ],
        test: {
          name: 'workerd',
          include: ['tests/workerd/**/*.test.ts'],
          // Node side: writes the tiny model and Node's reference logits, handed over with provide/inject
          globalSetup: ['tests/workerd/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
      {
        test: {
          name: 'browser',
          include: ['tests/browser/**/*.test.ts'],
          environment: 'node',
          // starts `hymba dev` (as `npm start` does) on a free port; finds Debian's chromium
          globalSetup: ['tests/browser/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
