// The settings fields (model, sampling, API key, system prompt, tools, tool_choice): filled from localStorage
// at start and saved back on every edit. The model list comes from GET /v1/models.

import { api, errorMessage, page, persist, status, ui } from './page.js';
import { bindToolsExample } from './tools.js';
import { el } from './view.js';

export function bindSettings(): void {
  const { settings } = page;
  ui.maxTokens.value = String(settings.maxTokens);
  ui.temperature.value = String(settings.temperature);
  ui.apiKey.value = settings.apiKey;
  ui.system.value = settings.system;
  ui.tools.value = settings.tools;
  ui.toolChoice.value = settings.toolChoice;
  const save = (): void => {
    settings.maxTokens = Math.max(1, Math.floor(Number(ui.maxTokens.value) || 1));
    settings.temperature = Math.max(0, Number(ui.temperature.value) || 0);
    settings.apiKey = ui.apiKey.value;
    settings.system = ui.system.value;
    settings.tools = ui.tools.value;
    settings.toolChoice = ui.toolChoice.value;
    settings.model = ui.model.value;
    persist();
  };
  for (const input of [ui.maxTokens, ui.temperature, ui.apiKey, ui.system, ui.tools, ui.toolChoice, ui.model]) {
    input.addEventListener('input', save);
    input.addEventListener('change', save);
  }
  // another key may see other models
  ui.apiKey.addEventListener('change', () => void loadModels());
  bindToolsExample(save);
}

/** The Model select: the served models, keeping the saved choice when it is still served. */
export async function loadModels(): Promise<void> {
  try {
    const { data } = await api.models();
    ui.model.replaceChildren(...data.map((m) => el('option', { value: m.id }, m.id)));
    if (data.some((m) => m.id === page.settings.model)) ui.model.value = page.settings.model;
    page.settings.model = ui.model.value;
  } catch (e) {
    status(`Could not list the models: ${errorMessage(e)}`, true);
  }
}
