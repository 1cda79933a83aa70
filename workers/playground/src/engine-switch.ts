// The Engine select: which engine runs the next turn. "this browser" is the in-browser engine, loaded once
// when first chosen; its info line says which execution provider runs and how fast. The handoff buttons show
// only while it is chosen (handoff.ts moves a session between it and the server).

import { serverEngine, type Engine } from './engine.js';
import { chooseExecutionProvider, LocalEngine } from './local-engine.js';
import { active, api, errorMessage, status, ui } from './page.js';
import { formatBytes } from './view.js';

/** the "Engine" select's values; the in-browser engine is registered here once loaded */
const ENGINES: Record<string, Engine> = { server: serverEngine(api) };
/** the in-browser engine ("this browser"): loaded when first selected */
let local: LocalEngine | null = null;
let localLoading: Promise<LocalEngine> | null = null;

/** the in-browser engine, once loaded */
export const localEngine = (): LocalEngine | null => local;

/** The engine the select names (loading the in-browser one if need be). */
export async function selectedEngine(): Promise<Engine> {
  return ui.engine.value === 'browser' ? await ensureLocal() : (ENGINES[ui.engine.value] ?? ENGINES.server!);
}

/** Load the engine into this page once: ORT (WebGPU when there is an adapter, else WASM) and the served model. */
export function ensureLocal(): Promise<LocalEngine> {
  localLoading ??= (async () => {
    const ep = await chooseExecutionProvider();
    ui.localInfo.textContent = `This browser: loading the model (${ep})...`;
    const engine = await LocalEngine.load(api, ep);
    ENGINES.browser = local = engine;
    showLocal();
    updateHandoff();
    return engine;
  })();
  localLoading.catch((e: unknown) => {
    localLoading = null;
    ui.localInfo.textContent = '';
    status(`The in-browser engine could not load: ${errorMessage(e)}`, true);
  });
  return localLoading;
}

/** Which EP runs, the load time, the last local turn's decode rate, the last handoff. */
export function showLocal(): void {
  if (!local) return;
  const parts = [`This browser: ${local.ep}`, `model loaded in ${Math.round(local.loadMs)} ms`];
  const t = local.lastTurn;
  ui.localInfo.dataset.ep = local.ep;
  if (t?.decodeTokensPerSecond) {
    parts.push(`decode ${t.decodeTokensPerSecond.toFixed(1)} tokens/s`);
    ui.localInfo.dataset.tps = t.decodeTokensPerSecond.toFixed(2);
  }
  const h = local.lastHandoff;
  if (h)
    parts.push(`last handoff: ${h.direction} ${formatBytes(h.bytes)} (${h.tokens} tokens) in ${Math.round(h.ms)} ms`);
  ui.localInfo.textContent = parts.join(' · ');
}

/** The handoff buttons: with "this browser" selected and a session open; send back once a local turn ran. */
export function updateHandoff(): void {
  const s = active();
  const browser = ui.engine.value === 'browser' && local !== null && s !== undefined;
  ui.continueHere.hidden = !browser;
  ui.sendBack.hidden = !(browser && (local!.localState(s.id)?.localTurns ?? 0) > 0);
}

export function bindEngineSwitch(): void {
  ui.engine.addEventListener('change', () => {
    updateHandoff();
    // start loading at once (a failure is shown by ensureLocal)
    if (ui.engine.value === 'browser') void ensureLocal().catch(() => undefined);
  });
}
