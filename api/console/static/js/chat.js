// The chat sidebar: sessions, the transcript, the answer streaming from llm_delta, the plan
// with live step states, outputs folded open on click, the fallback marked, usage and cost.

import { api, chatSocket } from './api.js';
import { alertBox, fill, h, link, pretty } from './dom.js';

const SESSION = 'orchestrator.session';
const STEP_EVENTS = {
  step_started: 'running', step_succeeded: 'succeeded', step_failed: 'failed',
  step_held: 'held', step_waiting: 'waiting', step_approved: 'running',
  step_rejected: 'failed', step_resumed: 'running', step_expired: 'failed',
};
let socket = null;
let ui = null;

function sessionId() {
  let id = sessionStorage.getItem(SESSION);
  if (!id) {
    id = `console-${crypto.randomUUID()}`;
    sessionStorage.setItem(SESSION, id);
  }
  return id;
}

function bubble(role, text) {
  return h('div', { class: `msg ${role}` }, h('div', { class: 'who' }, role), h('div', { class: 'text' }, text));
}

async function loadSessions() {
  const sessions = await api('/v1/sessions');
  const current = sessionId();
  const ids = sessions.map((s) => s.id);
  if (!ids.includes(current)) ids.unshift(current);
  fill(ui.sessions, ids.map((id) => h('option', { value: id, selected: id === current }, id)));
}

async function loadTranscript() {
  fill(ui.log);
  try {
    const page = await api(`/v1/sessions/${encodeURIComponent(sessionId())}/messages`);
    for (const m of page.messages) {
      if (m.role === 'tool') {
        ui.log.append(h('details', { class: 'msg tool' }, h('summary', {}, m.content.split('\n')[0].slice(0, 80) || 'tool'),
          h('pre', {}, m.content)));
      } else {
        ui.log.append(bubble(m.role, m.content));
      }
    }
  } catch (error) {
    if (error.status !== 404) ui.log.append(alertBox(error.message)); // 404: a new session
  }
}

/** One answer being written: its plan, its text, then its usage. */
class Turn {
  constructor() {
    this.text = h('div', { class: 'text answer-text', 'data-state': 'streaming', 'aria-live': 'off' });
    this.plan = h('ol', { class: 'plan', 'aria-label': 'Plan' });
    this.meta = h('div', { class: 'meta' });
    this.steps = new Map();
    this.el = h('div', { class: 'msg assistant' }, h('div', { class: 'who' }, 'assistant'), this.plan, this.text, this.meta);
  }

  accepted(event) {
    this.jobId = event.job_id;
    this.meta.append(link(`/console/jobs/${encodeURIComponent(event.job_id)}`, 'job'));
  }

  planned(data) {
    if (data.fallback_reason) this.plan.before(h('p', { class: 'fallback' }, `Fallback: rule-based planner (${data.fallback_reason})`));
    data.steps.forEach((step, n) => {
      const state = h('span', { class: 'badge s-pending' }, 'pending');
      const output = h('pre', {}, 'No output yet.');
      const item = h('li', { class: 'plan-step', 'data-status': 'pending', 'data-intent': step.intent },
        h('details', {}, h('summary', {}, h('strong', {}, step.intent), ' ', state, step.why ? ` · ${step.why}` : ''), output));
      this.steps.set(data.index + 1 + n, { item, state, output, intent: step.intent });
      this.plan.append(item);
    });
  }

  find(index, intent) {
    const known = this.steps.get(index);
    if (known && known.intent === intent) return known;
    return [...this.steps.values()].find((s) => s.intent === intent && s.item.dataset.status === 'pending');
  }

  step(event) {
    const status = STEP_EVENTS[event.type];
    const found = status && this.find(event.data.index, event.data.intent);
    if (!found) return;
    found.item.dataset.status = status;
    found.state.className = `badge s-${status}`;
    found.state.textContent = status;
  }

  delta(text) {
    this.text.append(document.createTextNode(text));
  }

  async finish(answer) {
    this.text.textContent = answer.response;
    this.text.dataset.state = 'done';
    if (answer.fallback) this.meta.append(h('span', { class: 'fallback' }, 'Fallback answer (rule-based, no model)'));
    try {
      const job = await api(`/v1/jobs/${encodeURIComponent(answer.job_id)}`);
      for (const step of job.steps) {
        const found = this.steps.get(step.index);
        if (found && step.output !== null && step.output !== undefined) found.output.textContent = pretty(step.output);
      }
      const u = job.usage || {};
      const cost = typeof u.cost === 'number' ? ` · cost $${u.cost.toFixed(6)}` : '';
      this.meta.append(h('span', { class: 'usage' }, `${u.prompt_tokens || 0} tokens in, ${u.completion_tokens || 0} out${cost}`));
    } catch { /* the answer stands without its usage */ }
  }
}

function onMessage(raw) {
  const event = JSON.parse(raw.data);
  const turn = ui.turn;
  if (event.type === 'authenticated') { ui.send.disabled = false; return; }
  if (event.type === 'error') { ui.log.append(alertBox(event.error)); ui.send.disabled = false; return; }
  if (!turn) return;
  if (event.type === 'accepted') turn.accepted(event);
  else if (event.type === 'plan_created') turn.planned(event.data);
  else if (event.type === 'llm_delta') turn.delta(event.data.text);
  else if (event.type in STEP_EVENTS) turn.step(event);
  else if (event.type === 'answer') {
    ui.turn = null;
    ui.send.disabled = false;
    turn.finish(event).then(() => loadSessions().catch(() => {}));
  }
  ui.log.scrollTop = ui.log.scrollHeight;
}

function connect() {
  socket = chatSocket();
  socket.addEventListener('message', onMessage);
  const mine = socket;
  socket.addEventListener('close', (event) => {
    if (!ui || socket !== mine) return; // signed out, or a newer socket took over
    ui.send.disabled = true;
    if (event.code === 4401) fill(ui.status, alertBox('The chat refused the API key.'));
    else setTimeout(() => { if (ui && socket === mine) connect(); }, 1000);
  });
}

function submit(event) {
  event.preventDefault();
  const message = ui.input.value.trim();
  if (!message || ui.send.disabled) return;
  ui.log.append(bubble('user', message));
  ui.turn = new Turn();
  ui.log.append(ui.turn.el);
  ui.send.disabled = true;
  socket.send(JSON.stringify({ message, session_id: sessionId() }));
  ui.input.value = '';
}

function switchTo(id) {
  sessionStorage.setItem(SESSION, id);
  loadTranscript();
  loadSessions().catch(() => {});
}

/** Draw the sidebar into `root` and open the socket. */
export function startChat(root) {
  stopChat();
  const input = h('textarea', { id: 'chat-message', name: 'message', rows: 3, required: true });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) { event.preventDefault(); input.form.requestSubmit(); }
  });
  ui = {
    input, turn: null,
    send: h('button', { type: 'submit', disabled: true }, 'Send'),
    log: h('div', { class: 'log', role: 'log', 'aria-label': 'Transcript' }),
    status: h('div', { 'aria-live': 'assertive' }),
    sessions: h('select', { id: 'chat-session', onchange: (event) => switchTo(event.target.value) }),
  };
  fill(root, h('h2', {}, 'Chat'),
    h('div', { class: 'sessions' }, h('label', { for: 'chat-session' }, 'Session'), ui.sessions,
      h('button', { type: 'button', onclick: () => switchTo(`console-${crypto.randomUUID()}`) }, 'New session')),
    ui.log, ui.status,
    h('form', { class: 'composer', onsubmit: submit },
      h('label', { for: 'chat-message' }, 'Message'), input, ui.send));
  connect();
  loadSessions().catch(() => {});
  loadTranscript();
}

export function stopChat() {
  const open = socket;
  ui = null;
  socket = null;
  if (open) open.close();
}
