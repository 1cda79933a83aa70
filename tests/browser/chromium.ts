// Launching Debian's chromium for the browser tests (the path comes from global-setup.ts).

import { chromium, type Browser } from 'playwright-core';

/**
 * Closed network: no background fetches, component updates, sync or QUIC (this machine refuses outside
 * connections); WebGPU on for the in-browser engine (SwiftShader in headless chromium).
 */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--enable-unsafe-webgpu',
];

/** The skipped test's name when no chromium is installed (the suite says so instead of passing silently). */
export const NO_CHROMIUM = "browser tests need Debian's chromium: apt-get install chromium";

export function launchChromium(executablePath: string): Promise<Browser> {
  return chromium.launch({ executablePath, args: CHROMIUM_FLAGS, headless: true });
}
