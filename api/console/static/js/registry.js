// The registry: intents, HTTP tools (register, delete), agents, flows, MCP tools, memory
// namespaces with search, breakers with reset.

import { api, auth, signals } from './api.js';
import { alertBox, fill, h, pretty } from './dom.js';

function section(id, title, ...body) {
  return h('section', { id, 'aria-labelledby': `${id}-h` }, h('h2', { id: `${id}-h` }, title), ...body);
}

function intentRows(intents) {
  return h('table', { class: 'intents' },
    h('thead', {}, h('tr', {}, ['Intent', 'Effect', 'Pool', 'Mode', 'Schema'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, intents.map((i) => h('tr', { 'data-intent': i.name },
      h('td', {}, h('strong', {}, i.name), i.dangerous ? ' ⚠' : '', h('div', { class: 'muted' }, i.description)),
      h('td', {}, i.effect), h('td', {}, i.pool), h('td', {}, i.mode),
      h('td', {}, h('details', {}, h('summary', {}, 'schema'), h('pre', {}, pretty(i.input_schema))))))));
}

function field(id, label, control) {
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control);
}

function toolForm(redraw) {
  const status = h('div', { 'aria-live': 'assertive' });
  const name = h('input', { type: 'text', required: true, placeholder: 'weather' });
  const method = h('select', {}, ['POST', 'GET', 'PUT', 'PATCH', 'DELETE', 'HEAD'].map((m) => h('option', { value: m }, m)));
  const url = h('input', { type: 'url', required: true, placeholder: 'https://api.example.com/{city}' });
  const description = h('input', { type: 'text' });
  const schema = h('textarea', { rows: 3 }, '{"type": "object"}');
  const submit = async (event) => {
    event.preventDefault();
    let inputSchema;
    try { inputSchema = JSON.parse(schema.value || '{}'); } catch (error) {
      fill(status, alertBox(`Input schema: not JSON (${error.message})`));
      return;
    }
    try {
      const tool = await api('/v1/tools/register', { method: 'POST', body: {
        name: name.value.trim(), method: method.value, url: url.value.trim(),
        description: description.value, input_schema: inputSchema } });
      fill(status, h('p', { class: 'ok' }, `Registered ${tool.intent}.`));
      redraw();
    } catch (error) { fill(status, alertBox(error.message)); }
  };
  return h('form', { class: 'tool-form', onsubmit: submit, 'aria-label': 'Register an HTTP tool' },
    field('tool-name', 'Tool name', name), field('tool-method', 'Method', method),
    field('tool-url', 'URL', url), field('tool-description', 'Description', description),
    field('tool-schema', 'Input schema (JSON)', schema),
    h('button', { type: 'submit' }, 'Register tool'), status);
}

function deleteButton(label, path, redraw, status) {
  return h('button', { type: 'button', 'aria-label': label, onclick: async () => {
    try { await api(path, { method: 'DELETE' }); redraw(); } catch (error) { fill(status, alertBox(error.message)); }
  } }, 'Delete');
}

function agentForm(redraw) {
  const status = h('div', { 'aria-live': 'assertive' });
  const id = h('input', { type: 'text', required: true });
  const name = h('input', { type: 'text', required: true });
  const endpoint = h('input', { type: 'url', required: true });
  return h('form', { class: 'agent-form', 'aria-label': 'Register an agent', onsubmit: async (event) => {
    event.preventDefault();
    try {
      await api('/v1/agents/register', { method: 'POST', body: { agent_id: id.value.trim(), name: name.value.trim(), endpoint: endpoint.value.trim() } });
      fill(status, h('p', { class: 'ok' }, 'Registered (its health check answered).'));
      redraw();
    } catch (error) { fill(status, alertBox(error.message)); }
  } }, field('agent-id', 'Agent id', id), field('agent-name', 'Agent name', name),
  field('agent-endpoint', 'Endpoint', endpoint), h('button', { type: 'submit' }, 'Register agent'), status);
}

function ranks(result) {
  return Object.entries(result.ranks || {}).map(([signal, rank]) => `${signal} ${rank ? `#${rank}` : '–'}`).join(' · ');
}

function memorySearch(namespaces) {
  const status = h('div', { 'aria-live': 'polite' });
  const query = h('input', { type: 'search', required: true });
  const namespace = h('select', {}, namespaces.map((n) => h('option', { value: n.namespace }, `${n.namespace} (${n.items})`)));
  return h('form', { role: 'search', class: 'memory-search', onsubmit: async (event) => {
    event.preventDefault();
    fill(status, h('p', {}, 'Searching…'));
    try {
      const job = await api('/v1/jobs', { method: 'POST', body: { intent: 'memory.search', wait: 8,
        inputs: { query: query.value, namespace: namespace.value || 'default', k: 10 } } });
      const results = (job.result && job.result.results) || [];
      if (!job.result) { fill(status, h('p', {}, `Still searching: see job ${job.job_id}.`)); return; }
      fill(status, h('ol', { class: 'memory-results' }, results.map((r) => h('li', {},
        h('span', {}, r.text), h('div', { class: 'muted' }, `score ${Number(r.score).toFixed(4)} · ${ranks(r)}`)))));
    } catch (error) { fill(status, alertBox(error.message)); }
  } }, field('memory-namespace', 'Namespace', namespace), field('memory-query', 'Search memory', query),
  h('button', { type: 'submit' }, 'Search'), status);
}

function breakerRow(b, redraw, status) {
  return h('tr', {}, h('td', {}, b.name), h('td', {}, h('span', { class: `badge b-${b.state}` }, b.state)),
    h('td', {}, String(b.failures)), h('td', {}, b.state === 'closed' ? '' : h('button', { type: 'button',
      'aria-label': `Reset ${b.name}`, onclick: async () => {
        try { await api(`/v1/breakers/${encodeURIComponent(b.name)}/reset`, { method: 'POST' }); redraw(); } catch (error) { fill(status, alertBox(error.message)); }
      } }, 'Reset')));
}

export async function registryPage(root, signal) {
  const parts = {};
  for (const id of ['intents', 'tools', 'agents', 'flows', 'mcp', 'memory', 'breakers']) parts[id] = h('div', {});
  const status = h('div', { 'aria-live': 'assertive' });
  const operator = h('p', {});
  fill(root, h('h1', {}, 'Registry'), operator, status,
    section('reg-tools', 'HTTP tools', toolForm(() => draw()), parts.tools),
    section('reg-intents', 'Intents', parts.intents),
    section('reg-agents', 'Agents', agentForm(() => draw()), parts.agents),
    section('reg-flows', 'Flows', parts.flows), section('reg-mcp', 'MCP tools', parts.mcp),
    section('reg-memory', 'Memory', parts.memory), section('reg-breakers', 'Breakers', parts.breakers));
  const draw = async () => {
    const [intents, tools, agents, memory, breakers] = await Promise.all([
      api('/v1/intents', { signal }), api('/v1/tools', { signal }), api('/v1/agents', { signal }),
      api('/v1/memory/stats', { signal }), api('/v1/breakers', { signal })]);
    fill(parts.intents, intentRows(intents));
    const http = tools.filter((t) => t.kind === 'http');
    fill(parts.tools, http.length ? h('ul', {}, http.map((t) => h('li', { 'data-tool': t.name },
      h('strong', {}, t.intent), ` ${t.method} `, h('code', {}, t.url), ' ',
      deleteButton(`Delete ${t.name}`, `/v1/tools/${encodeURIComponent(t.name)}`, draw, status))))
      : h('p', { class: 'empty' }, 'No HTTP tools registered.'));
    fill(parts.agents, agents.length ? h('ul', {}, agents.map((a) => h('li', {}, h('strong', {}, a.intent), ` ${a.name} `,
      h('code', {}, a.endpoint), ' ', deleteButton(`Delete ${a.agent_id}`, `/v1/agents/${encodeURIComponent(a.agent_id)}`, draw, status))))
      : h('p', { class: 'empty' }, 'No agents registered.'));
    const flows = intents.filter((i) => i.mode === 'flow');
    fill(parts.flows, flows.length ? intentRows(flows) : h('p', { class: 'empty' }, 'No flows configured.'));
    const mcp = intents.filter((i) => i.name.startsWith('mcp.'));
    fill(parts.mcp, mcp.length ? intentRows(mcp) : h('p', { class: 'empty' }, 'No MCP tools discovered.'));
    fill(parts.memory, h('p', {}, `${memory.items} items · embedder ${memory.embedder}`),
      h('ul', {}, memory.namespaces.map((n) => h('li', {}, `${n.namespace}: ${n.items} items (${n.model})`))),
      memorySearch(memory.namespaces.length ? memory.namespaces : [{ namespace: 'default', items: 0 }]));
    fill(parts.breakers, breakers.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Upstream', 'State', 'Failures', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, breakers.map((b) => breakerRow(b, draw, status)))) : h('p', { class: 'empty' }, 'No breakers yet.'));
    signals.dispatchEvent(new Event('changed'));
  };
  await draw();
  try {
    const metrics = await fetch('/metrics', { headers: { Authorization: `Bearer ${auth.key()}` }, signal });
    if (metrics.ok) fill(operator, 'Operator key: every breaker is listed, and Prometheus metrics are readable with it at ', h('code', {}, '/metrics'), '.');
  } catch { /* not an operator */ }
}
