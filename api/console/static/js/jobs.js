// Jobs: the list (filters, cursor paging, live) and one job's page (timeline, live events).

import { api, followEvents } from './api.js';
import { pendingCard } from './approvals.js';
import { age, alertBox, badge, duration, fill, h, link, pretty, time } from './dom.js';

const STATUSES = ['queued', 'running', 'awaiting_approval', 'waiting', 'succeeded', 'failed', 'cancelled'];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

function navigate(href) {
  history.pushState(null, '', href);
  window.dispatchEvent(new PopStateEvent('popstate'));
}

function jobHref(id) {
  return `/console/jobs/${encodeURIComponent(id)}`;
}

function filters(params) {
  const status = h('select', { id: 'f-status', name: 'status' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s, selected: params.get('status') === s }, s)));
  const intent = h('input', { id: 'f-intent', name: 'intent', type: 'text', value: params.get('intent') || '',
    placeholder: 'e.g. debug.echo' });
  return h('form', { class: 'filters', role: 'search', onsubmit: (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    if (status.value) query.set('status', status.value);
    if (intent.value.trim()) query.set('intent', intent.value.trim());
    navigate(`/console/jobs${query.size ? `?${query}` : ''}`);
  } },
  h('label', { for: 'f-status' }, 'Status'), status,
  h('label', { for: 'f-intent' }, 'Intent'), intent,
  h('button', { type: 'submit' }, 'Filter'));
}

function row(job) {
  return h('tr', { 'data-job': job.job_id },
    h('td', {}, link(jobHref(job.job_id), job.job_id)),
    h('td', {}, job.intent), h('td', {}, badge(job.status)),
    h('td', {}, h('time', { datetime: job.created_at }, age(job.created_at))),
    h('td', {}, duration(job.duration_ms)));
}

function table(items) {
  return h('table', { class: 'jobs' },
    h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
    h('thead', {}, h('tr', {}, ['Job', 'Intent', 'Status', 'Age', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, items.map(row)));
}

/** The list: `?status=&intent=&cursor=` in the URL, so a filtered page can be shared. */
export async function jobsPage(root, signal) {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams({ limit: '50' });
  for (const name of ['status', 'intent', 'cursor']) if (params.get(name)) query.set(name, params.get(name));
  const body = h('div', {});
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  fill(root, h('h1', {}, 'Jobs'), filters(params), body, pager);
  const draw = async () => {
    const page = await api(`/v1/jobs?${query}`, { signal });
    fill(body, page.items.length ? table(page.items) : h('p', { class: 'empty' }, 'No jobs match.'));
    const next = new URLSearchParams(params);
    if (page.next_cursor) next.set('cursor', page.next_cursor);
    const first = new URLSearchParams(params);
    first.delete('cursor');
    fill(pager, params.get('cursor') ? link(`/console/jobs${first.size ? `?${first}` : ''}`, 'First page') : null,
      page.next_cursor ? link(`/console/jobs?${next}`, 'Next page') : null);
    return page;
  };
  await draw();
  performance.mark('console:jobs-drawn');
  // Live: the first page follows new jobs and status changes.
  if (!params.get('cursor')) {
    const timer = setInterval(() => draw().catch(() => {}), 2000);
    signal.addEventListener('abort', () => clearInterval(timer));
  }
}

function stepItem(step) {
  const worker = step.worker || step.runner;
  const took = step.started_at && step.finished_at
    ? Date.parse(step.finished_at) - Date.parse(step.started_at) : null;
  return h('li', { class: `step s-${step.status}`, 'data-index': step.index, 'data-status': step.status },
    h('div', { class: 'step-head' },
      h('span', { class: 'step-index' }, `#${step.index}`), h('strong', {}, step.intent),
      badge(step.status),
      h('span', { class: 'muted' }, `pool ${step.pool} · attempts ${step.attempts}`,
        worker ? ` · worker ${worker}` : '', ` · ${duration(took)}`)),
    step.reason ? h('p', { class: 'reason' }, step.reason, step.deadline ? ` (until ${time(step.deadline)})` : '') : null,
    step.error ? h('p', { class: 'error-text' }, step.error) : null,
    step.output !== null && step.output !== undefined
      ? h('details', {}, h('summary', {}, 'Output'), h('pre', {}, pretty(step.output))) : null);
}

function deliveryRow(delivery, redraw) {
  const status = h('span', { 'aria-live': 'polite' });
  const again = async () => {
    try {
      await api(`/v1/deliveries/${encodeURIComponent(delivery.id)}/redeliver`, { method: 'POST' });
      redraw();
    } catch (error) { fill(status, alertBox(error.message)); }
  };
  return h('li', {}, h('code', {}, delivery.url), ' ', badge(delivery.status),
    ` attempts ${delivery.attempts}`, delivery.last_status_code ? ` · last ${delivery.last_status_code}` : '',
    delivery.last_error ? ` · ${delivery.last_error}` : '', ' ',
    h('button', { type: 'button', onclick: again }, 'Redeliver'), status);
}

function header(job, onCancel) {
  return h('div', { class: 'job-head' },
    h('h1', {}, 'Job ', h('code', {}, job.job_id)),
    h('p', {}, h('strong', {}, job.intent), ' ', h('span', { id: 'job-status' }, badge(job.status)),
      ` · created ${time(job.created_at)} · duration ${duration(job.duration_ms)}`,
      job.usage ? ` · tokens ${job.usage.prompt_tokens || 0} in / ${job.usage.completion_tokens || 0} out` : ''),
    TERMINAL.has(job.status) ? null
      : h('button', { type: 'button', class: 'danger', onclick: onCancel }, 'Cancel job'));
}

function heldItem(job) {
  const p = job.pending;
  if (!p) return null;
  const inputs = p.inputs || {};
  return { job_id: job.job_id, index: p.index, intent: p.intent || '', status: p.status,
    inputs, host: inputs.host, command: inputs.command, reason: p.reason,
    deadline: p.expires_at || p.deadline, token: p.token };
}

function notFoundPage(root, id) {
  fill(root, h('h1', {}, 'Job not found'),
    h('p', { class: 'not-found' }, `Job ${id} was not found: it does not exist or is not your tenant's.`),
    link('/console/jobs', 'All jobs'));
}

/** One job: its steps as a timeline, live over SSE; inputs, result, error; deliveries. */
export async function jobPage(root, signal, id) {
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
  } catch (error) {
    if (error.status === 404) return notFoundPage(root, id);
    throw error;
  }
  const head = h('div', {});
  const pending = h('div', {});
  const steps = h('ol', { class: 'timeline', 'aria-label': 'Steps' });
  const data = h('div', { class: 'data' });
  const deliveries = h('ul', { class: 'deliveries' });
  const events = h('ol', { class: 'events', 'aria-label': 'Events' });
  const problem = h('div', { 'aria-live': 'assertive' });
  const cancel = async () => {
    try {
      await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
      await reload();
    } catch (error) { fill(problem, alertBox(error.message)); }
  };
  const draw = () => {
    fill(head, header(job, cancel));
    const held = heldItem(job);
    fill(pending, held ? pendingCard(held, reload) : null);
    fill(steps, job.steps.map(stepItem));
    fill(data, h('h2', {}, 'Inputs'), h('pre', { class: 'inputs' }, pretty(job.inputs)),
      job.result !== null && job.result !== undefined ? [h('h2', {}, 'Result'), h('pre', { class: 'result' }, pretty(job.result))] : null,
      job.error ? [h('h2', {}, 'Error'), h('p', { class: 'error-text job-error' }, job.error)] : null);
  };
  let polling = null;
  const drawDeliveries = async () => {
    const rows = await api(`/v1/deliveries?job_id=${encodeURIComponent(id)}`, { signal });
    fill(deliveries, rows.length ? rows.map((d) => deliveryRow(d, drawDeliveries)) : h('li', { class: 'empty' }, 'No callback.'));
    // A delivery goes on after the job's last event (the stream has ended): follow it to its end.
    clearTimeout(polling);
    if (rows.some((d) => d.status === 'pending' || d.status === 'sending') && !signal.aborted) {
      polling = setTimeout(() => drawDeliveries().catch(() => {}), 1000);
    }
  };
  let queued = null;
  const reload = async () => {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`, { signal });
    draw();
  };
  const onEvent = (event) => {
    events.append(h('li', {}, h('time', { datetime: event.time }, time(event.time)), ' ',
      h('strong', {}, event.type), event.data && event.data.index !== undefined ? ` step ${event.data.index}` : ''));
    if (event.type.startsWith('callback_') || event.type.startsWith('job_')) drawDeliveries().catch(() => {});
    if (event.type === 'llm_delta') return;
    clearTimeout(queued);
    queued = setTimeout(() => reload().catch(() => {}), 100);
  };
  draw();
  fill(root, head, problem, pending, h('h2', {}, 'Timeline'), steps, data,
    h('h2', {}, 'Callback deliveries'), deliveries, h('h2', {}, 'Events'), events);
  await drawDeliveries();
  followEvents(id, onEvent, signal).catch((error) => fill(problem, alertBox(error.message)));
}
