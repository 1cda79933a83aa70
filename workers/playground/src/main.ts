// The playground: chat with a session of the server (streamed) or with the same engine in this browser,
// keep a list of sessions in localStorage, show each turn's numbers, fork, delete, try function tools, and
// hand a session over between the server and the browser. Plain DOM; index.html holds the markup.
//
//   page.ts           shared state: settings, session list, API client, elements, status line
//   settings.ts       the settings fields and the model list      tools.ts      the Tools panel
//   sessions.ts       the Sessions panel (open, delete, new, fork) transcript.ts the open session's messages
//   turn.ts           the composer and one streamed turn           stats.ts      per-turn numbers
//   engine-switch.ts  the Engine select, the in-browser engine     handoff.ts    continue here / send back

import { bindEngineSwitch, localEngine } from './engine-switch.js';
import { bindHandoff } from './handoff.js';
import type { LocalEngine } from './local-engine.js';
import { page } from './page.js';
import { bindNewSession, openSession, renderSessions } from './sessions.js';
import { bindSettings, loadModels } from './settings.js';
import { bindComposer } from './turn.js';

bindComposer();
bindEngineSwitch();
bindHandoff();
/** test hook (tests/browser): the in-browser engine, once loaded */
(window as unknown as { hymbaLocal: () => LocalEngine | null }).hymbaLocal = localEngine;
bindNewSession();

bindSettings();
renderSessions();
void loadModels();
if (page.settings.active) void openSession(page.settings.active);
