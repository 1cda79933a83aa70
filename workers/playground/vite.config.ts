// The playground page: `npm run build:web` (and `npm start`, via infra/cli/dev.ts) builds it into dist/, which
// wrangler.toml's [assets] serves next to the API.
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  publicDir: false,
  logLevel: 'warn',
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
