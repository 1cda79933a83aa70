// Run a TypeScript script in a fresh Node process (benchmarks and memory measurements need one per sample:
// WASM memory never shrinks) and collect its stdout.

import { spawn } from 'node:child_process';
import { basename } from 'node:path';

/** `node [...nodeFlags] --import tsx <path> ...args`; resolves with stdout, rejects with the tail of stderr. */
export function runTsChild(path: string, args: string[], nodeFlags: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', path, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`${basename(path)} exited ${code}: ${Buffer.concat(err).toString('utf8').slice(-2000)}`));
    });
  });
}
