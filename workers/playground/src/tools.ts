// The Tools panel: OpenAI function tools as a JSON array, and an example to start from. With tools set, a turn
// goes through /v1/chat/completions with the whole conversation (engine.ts).

import { ui } from './page.js';
import { $ } from './view.js';

const TOOLS_EXAMPLE = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The current weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 40 } }, required: ['city'] },
    },
  },
];

/** The tools textarea: null when empty, else a JSON array (a clear error otherwise). */
export function toolsOf(): unknown[] | null {
  const text = ui.tools.value.trim();
  if (!text) return null;
  const tools: unknown = JSON.parse(text);
  if (!Array.isArray(tools)) throw new Error('Tools must be a JSON array of {type: "function", function: {...}}');
  return tools.length > 0 ? tools : null;
}

/** "Insert an example": fills the textarea, then `save` keeps it with the settings */
export function bindToolsExample(save: () => void): void {
  $('tools-example').addEventListener('click', () => {
    ui.tools.value = JSON.stringify(TOOLS_EXAMPLE, null, 2);
    save();
  });
}
