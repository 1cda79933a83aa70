// Session handoff: the session's state leaves the edge (a browser running the same engine continues the
// conversation locally) and comes back. Out: every stage's slice of the newest snapshot, merged into one
// whole-model snapshot. Back in: the state, validated in full, split into slices and committed as a turn is.
// docs/serving.md, "Handoff".

import { stageSpecOf } from '../../engine/convert/manifest.js';
import type { ModelFront } from '../../engine/run/loaded-model.js';
import { KEEP_SNAPSHOTS } from '../../engine/serve/commit.js';
import { asResult, errors, ServeError, type Failed } from '../../engine/serve/errors.js';
import { encodeConversation } from '../../engine/serve/prepare.js';
import { deserializeState, serializeState, StateFingerprintError, StateFormatError } from '../../engine/state/codec.js';
import { checkWholeState, mergeStageStates, splitState } from '../../engine/state/merge.js';
import type { HymbaState } from '../../engine/state/state.js';
import type { ChatMessage } from '../../engine/text/chat-template.js';
import { frontFor } from './front.js';
import type { Session } from './session.js';
import type { StoredMessage } from './store.js';

/** What a client needs to continue a session from its downloaded state. */
export interface HandoffMeta {
  fingerprint: string;
  /** the turn the state ends */
  turn: number;
  /** the state's absolute position: meta tokens + tokens.length */
  position: number;
  /** the token ids the state covers (meta tokens excluded): the transcript up to `turn`, rendered */
  tokens: number[];
  /** the transcript up to `turn` */
  messages: StoredMessage[];
  /** bytes of the whole-model state in the engine's snapshot format */
  bytes: number;
}

/** A session's state, sent back by a client that continued it elsewhere. */
export interface HandoffUpload {
  /** the session's last turn when the client took the state; it must still be the last */
  baseTurn: number;
  /** the messages since baseTurn: each turn one or more user/tool messages, then the assistant's reply */
  messages: ChatMessage[];
  /** every token id the uploaded state covers (meta tokens excluded) */
  tokens: number[];
}

export interface HandoffResult {
  /** the session's last turn after the commit */
  turn: number;
  tokens: number;
  /** bytes of the state as the stages store it */
  snapshotBytes: number;
}

/**
 * The session's newest state as one whole-model snapshot with what a client needs to continue it;
 * `withState` false: the description only. 404 for another key's session, 409 `no_snapshot` when the last
 * turn's state is not stored (none yet, dropped).
 */
export function exportHandoff(
  s: Session,
  owner: string | null,
  withState: boolean,
): Promise<{ meta: HandoffMeta; state: ReadableStream<Uint8Array> | null } | Failed> {
  return asResult(async () => {
    s.ownedSession(owner);
    const front = await frontFor(s.env);
    const turn = s.store.lastTurn();
    const snap = s.store.snapshots()[0];
    const messages = s.store.messages(turn);
    if (!snap || snap.turn !== turn)
      throw errors.noSnapshot(turn, turn === 0 ? 'no turn has run yet' : 'it was dropped');
    if (snap.fingerprint !== front.fingerprint) throw errors.noSnapshot(turn, 'it belongs to another model');
    const merged = await mergedSnapshot(s, front, snap.id, turn);
    const d = front.model.dims;
    if (merged.position !== d.M + snap.tokens.length) throw errors.noSnapshot(turn, 'it is inconsistent');
    const bytes = serializeState(d, merged, front.fingerprint);
    const { fingerprint } = front;
    const meta: HandoffMeta = {
      fingerprint,
      turn,
      position: merged.position,
      tokens: snap.tokens,
      messages,
      bytes: bytes.length,
    };
    return { meta, state: withState ? streamOf(bytes) : null };
  });
}

/** Snapshot `id`'s slices from every stage, merged into the whole model's state. */
async function mergedSnapshot(s: Session, front: ModelFront, id: number, turn: number): Promise<HymbaState> {
  const d = front.model.dims;
  const slices = await Promise.all(s.routes(front).map((st) => st.stub.exportSlice(s.key, id)));
  try {
    const states = slices.map((b, k) => {
      if (!b) throw new StateFormatError(`stage ${k} no longer holds its slice`);
      return deserializeState(d, b, front.fingerprint);
    });
    return mergeStageStates(d, front.manifest.stages.map(stageSpecOf), states);
  } catch (e) {
    if (!(e instanceof StateFormatError)) throw e;
    console.warn(`snapshot ${id} cannot be exported: ${e.message}`);
    throw errors.noSnapshot(turn, 'it is incomplete');
  }
}

/**
 * Take back a state a client continued elsewhere: validate everything first (owner, busy, the snapshot's
 * format, checksum, model and layout, its position against `tokens`, base turn, and that `tokens` are the
 * transcript + new messages as a turn here would render them), then commit as a turn does. A failure before
 * the commit leaves the session exactly as it was.
 */
export async function importHandoff(
  s: Session,
  owner: string | null,
  upload: HandoffUpload,
  state: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<HandoffResult | Failed> {
  try {
    s.ownedSession(owner);
    if (s.busy) throw errors.busy();
  } catch (e) {
    await state.cancel().catch(() => undefined);
    if (e instanceof ServeError) return { error: e.info };
    throw e;
  }
  s.busy = true; // a turn that starts meanwhile gets 409, as does a second upload
  try {
    return await asResult(() => takeHandoff(s, upload, state, maxBytes));
  } finally {
    s.busy = false;
  }
}

async function takeHandoff(
  s: Session,
  upload: HandoffUpload,
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<HandoffResult> {
  const bytes = await readAll(stream, maxBytes);
  if (!bytes)
    throw new ServeError({
      kind: 'too_large',
      code: 'request_too_large',
      param: 'state',
      message: `The state is larger than the limit of ${maxBytes} bytes.`,
    });
  const front = await frontFor(s.env);
  const state = uploadedState(front, bytes);
  const d = front.model.dims;
  const { tokens } = upload;
  if (state.position !== d.M + tokens.length)
    throw errors.snapshotInvalid(
      `The state is at position ${state.position} (${d.M} meta tokens + ${state.position - d.M}), ` +
        `but meta.tokens has ${tokens.length} ids.`,
    );
  const last = s.store.lastTurn();
  if (upload.baseTurn !== last)
    throw new ServeError({
      kind: 'conflict',
      code: 'session_moved_on',
      param: 'meta.base_turn',
      message: `The session's last turn is ${last}, not ${upload.baseTurn}: it was continued meanwhile. Download its state again.`,
    });
  const turns = handoffTurns(upload.messages);
  checkRendering(s, front, upload);
  return commitHandoff(s, front, upload, state, turns);
}

/** The uploaded bytes as a whole-model state of this server's model, else 400. */
function uploadedState(front: ModelFront, bytes: Uint8Array): HymbaState {
  const d = front.model.dims;
  try {
    const state = deserializeState(d, bytes, front.fingerprint);
    checkWholeState(d, state);
    return state;
  } catch (e) {
    if (e instanceof StateFingerprintError)
      throw errors.snapshotInvalid(
        `The state belongs to model ${e.found}; this server runs model ${e.expected}.`,
        'snapshot_fingerprint_mismatch',
      );
    if (e instanceof StateFormatError)
      throw errors.snapshotInvalid(`The state is not a usable snapshot: ${e.message}.`);
    throw errors.snapshotInvalid('The state is not a usable snapshot: its header is unreadable.');
  }
}

/** 400 unless `upload.tokens` are the transcript + the new messages exactly as a turn here renders them. */
function checkRendering(s: Session, front: ModelFront, upload: HandoffUpload): void {
  const tok = front.tokenizer;
  if (!tok) throw invalidMeta('this model has no tokenizer: its sessions cannot be handed off', 'meta.messages');
  const history: ChatMessage[] = s.store.messages().map(({ turn: _turn, ...m }) => m);
  let rendered: number[];
  try {
    rendered = encodeConversation(tok, [...history, ...upload.messages], [], false);
  } catch (e) {
    throw invalidMeta(e instanceof Error ? e.message : String(e), 'meta.messages');
  }
  const { tokens } = upload;
  const differs = rendered.findIndex((id, i) => tokens[i] !== id);
  if (differs < 0 && rendered.length === tokens.length) return;
  const at = differs >= 0 ? differs : Math.min(rendered.length, tokens.length);
  throw errors.snapshotInvalid(
    `meta.tokens (${tokens.length} ids) are not the transcript and the new messages as this server renders ` +
      `them (${rendered.length} ids): they differ from index ${at}.`,
    'snapshot_tokens_mismatch',
    'meta.tokens',
  );
}

/** Commit as a turn does (docs/serving.md, commit protocol): slices, then the index, then old slices go. */
async function commitHandoff(
  s: Session,
  front: ModelFront,
  upload: HandoffUpload,
  state: HymbaState,
  turns: ChatMessage[][],
): Promise<HandoffResult> {
  const d = front.model.dims;
  const specs = front.manifest.stages.map(stageSpecOf);
  const slices = splitState(d, specs, state).map((p) => serializeState(d, p, front.fingerprint));
  const routes = s.routes(front);
  const id = s.store.allocateSnapshotId();
  await Promise.all(routes.map((st, k) => st.stub.importSlice(s.key, id, slices[k]!))); // 1. the slices
  const snapshotBytes = slices.reduce((n, b) => n + b.length, 0);
  const { tokens } = upload;
  const { turn, keep } = s.store.commitHandoff({
    // 2. current, atomically with the turns
    baseTurn: upload.baseTurn,
    turns,
    snapshot: { id, fingerprint: front.fingerprint, tokens, bytes: snapshotBytes },
    keepSnapshots: KEEP_SNAPSHOTS,
  });
  // 3. only now may older slices go; a failure here leaves garbage the next commit removes
  await Promise.all(routes.map((st) => st.stub.retain(s.key, keep))).catch((e: unknown) =>
    console.warn('dropping old snapshots failed:', e),
  );
  return { turn, tokens: tokens.length, snapshotBytes };
}

/** The turns of a handoff's messages: each one or more user/tool messages, then one assistant message. */
function handoffTurns(messages: ChatMessage[]): ChatMessage[][] {
  const bad = (i: number, why: string): ServeError => invalidMeta(`messages[${i}]: ${why}`, `meta.messages[${i}]`);
  if (messages.length === 0)
    throw invalidMeta('at least one turn (a user message and the reply) is needed', 'meta.messages');
  const turns: ChatMessage[][] = [];
  let current: ChatMessage[] = [];
  messages.forEach((m, i) => {
    if (m.role === 'assistant') {
      if (current.length === 0) throw bad(i, 'an assistant message must follow a user or tool message');
      turns.push([...current, m]);
      current = [];
    } else if (m.role === 'user' || m.role === 'tool') current.push(m);
    else throw bad(i, `role ${m.role} cannot be part of a turn (the system message is the session's)`);
  });
  if (current.length > 0)
    throw bad(messages.length - 1, 'the messages must end with the assistant reply the state covers');
  return turns;
}

const invalidMeta = (message: string, param: string): ServeError => errors.invalid(message, param);

/** A byte stream of `bytes` in 1 MiB chunks (RPC messages are limited; streams are not). */
function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (o >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(o, o + (1 << 20)));
      o += 1 << 20;
    },
  });
}

/** The stream's bytes, or null once they pass `max`. */
async function readAll(stream: ReadableStream<Uint8Array>, max: number): Promise<Uint8Array | null> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      n += value.length;
      if (n > max) return null;
      parts.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
