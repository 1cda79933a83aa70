// Before the browser tests: find Debian's chromium and start the real local server the way `npm start` does
// (`hymba dev`: builds the playground page, prepares and uploads the default model, runs wrangler dev) on a
// free port; wait for /health; stop it afterwards. Without chromium nothing starts and the tests say so.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

const ROOT = join(import.meta.dirname, '..', '..');
export const ARTIFACTS = join(ROOT, 'test-artifacts');
/** Debian's chromium (the /usr/bin wrapper prints a harmless warning, so the binary comes first) */
const CHROMIUM = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'];
const HEALTH_TIMEOUT_MS = 280_000;

declare module 'vitest' {
  export interface ProvidedContext {
    /** the chromium binary, or null when none is installed */
    chromiumPath: string | null;
    /** http://127.0.0.1:<port> of the running `hymba dev` ('' when the tests are skipped) */
    baseUrl: string;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function tail(file: string): string {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-30).join('\n') : '';
}

/** Poll /health until 200; fail early if the server exits. */
async function waitHealthy(base: string, child: ChildProcess, log: string): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`hymba dev exited (${child.exitCode}):\n${tail(log)}`);
    try {
      const res = await fetch(`${base}/health`, { signal: AbortSignal.timeout(5_000) });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`hymba dev was not healthy after ${HEALTH_TIMEOUT_MS / 1000} s:\n${tail(log)}`);
}

/** SIGTERM to the server's process group (hymba, wrangler, workerd), SIGKILL if it lingers. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(-child.pid!, s);
    } catch {
      // already gone
    }
  };
  signal('SIGTERM');
  const timer = setTimeout(() => signal('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const chromiumPath = CHROMIUM.find((p) => existsSync(p)) ?? null;
  project.provide('chromiumPath', chromiumPath);
  project.provide('baseUrl', '');
  if (!chromiumPath) {
    console.log(`[browser tests] SKIPPED: no chromium at ${CHROMIUM.join(' or ')}; apt-get install chromium`);
    return async () => {};
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const log = join(ARTIFACTS, 'server.log');
  const out = createWriteStream(log);
  const t0 = performance.now();
  // its own process group, so stopping it reaches wrangler and workerd too
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'hymba.js'), 'dev', '--port', String(port)], {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  try {
    await waitHealthy(base, child, log);
  } catch (e) {
    await stop(child);
    throw e;
  }
  console.log(
    `[browser tests] hymba dev healthy on ${base} after ${Math.round(performance.now() - t0)} ms (log: ${log})`,
  );
  project.provide('baseUrl', base);
  return () => stop(child);
}
