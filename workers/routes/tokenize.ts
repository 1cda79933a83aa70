// POST /tokenize and POST /detokenize (vLLM's shapes): the ids a prompt becomes, exactly as a turn tokenizes
// it (chat template included), and the text of ids. Served by a pool object, which holds the tokenizer.

import { Hono } from 'hono';
import type { AppEnv } from '../app-env.js';
import { unwrap } from '../api/errors.js';
import { DetokenizeRequestSchema, parseBody, TokenizeRequestSchema } from '../api/schemas.js';
import { toChatMessages } from '../api/to-turn.js';
import type { Env } from '../../durable-objects/env.js';
import { checkModel } from './completions.js';
import { modelId } from './models.js';

export const tokenize = new Hono<AppEnv>();

const poolStub = (env: Env) => env.SESSIONS.get(env.SESSIONS.idFromName(`pool:${Math.floor(Math.random() * 8)}`));

tokenize.post('/tokenize', async function tokenizeRoute(c) {
  const body = await parseBody(TokenizeRequestSchema, c.req.raw);
  checkModel(body.model, modelId(c.env));
  const out = await poolStub(c.env).tokenize(
    body.messages
      ? {
          kind: 'chat',
          messages: toChatMessages(body.messages),
          addGenerationPrompt: body.add_generation_prompt ?? true,
        }
      : { kind: 'text', text: body.prompt!, addSpecial: body.add_special_tokens ?? true },
  );
  const { tokens, maxModelLen } = unwrap<{ tokens: number[]; maxModelLen: number }>(out);
  return c.json({ count: tokens.length, max_model_len: maxModelLen, tokens });
});

tokenize.post('/detokenize', async function detokenizeRoute(c) {
  const body = await parseBody(DetokenizeRequestSchema, c.req.raw);
  checkModel(body.model, modelId(c.env));
  const out = await poolStub(c.env).detokenize(body.tokens);
  return c.json({ prompt: unwrap<{ prompt: string }>(out).prompt });
});
