// The API, called with the signed-in key as a bearer header (never in a URL).

const KEY = 'orchestrator.apiKey';
const TERMINAL = new Set(['job_succeeded', 'job_failed', 'job_cancelled']);
export const signals = new EventTarget();

export const auth = {
  key: () => sessionStorage.getItem(KEY),
  save: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An API answer that was not 2xx: its status and the API's own message. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${auth.key()}`, ...extra };
}

async function failure(response, signal = true) {
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  const message = (body && body.error) || `the API answered ${response.status}`;
  if (response.status === 401 && signal) signals.dispatchEvent(new CustomEvent('unauthorized', { detail: message }));
  return new ApiError(response.status, message, body);
}

/** Call the API; the parsed JSON, or an ApiError with the API's message. */
export async function api(path, { method = 'GET', body, signal, key } = {}) {
  const extra = { Accept: 'application/json' };
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, signal, cache: 'no-store',
    headers: key ? { ...extra, Authorization: `Bearer ${key}` } : headers(extra),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response, !key); // a key being tried signs no one out
  return response.status === 204 ? null : response.json();
}

function parseBlock(block) {
  const event = { data: '' };
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const at = line.indexOf(':');
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? '' : line.slice(at + 1).replace(/^ /, '');
    if (field === 'data') event.data += (event.data ? '\n' : '') + value;
    else event[field] = value;
  }
  return event.data ? event : null;
}

async function readStream(response, onEvent, state) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = parseBlock(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (!event) continue;
      if (event.id) state.last = Number(event.id);
      const data = JSON.parse(event.data);
      onEvent(data);
      if (TERMINAL.has(data.type)) { state.done = true; return; }
    }
  }
}

/** Follow a job's SSE stream with fetch (EventSource cannot send the bearer header),
 *  resuming with Last-Event-ID after a dropped connection, until its terminal event. */
export async function followEvents(jobId, onEvent, signal, after = 0) {
  const state = { last: after, done: false };
  while (!state.done && !signal.aborted) {
    try {
      const extra = { Accept: 'text/event-stream' };
      if (state.last) extra['Last-Event-ID'] = String(state.last);
      const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events`,
        { headers: headers(extra), signal, cache: 'no-store' });
      if (!response.ok) throw await failure(response);
      await readStream(response, onEvent, state);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

/** The chat WebSocket, authenticated by its first message (a browser cannot set its
 *  headers, and a key in its URL would be logged). */
export function chatSocket() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(`${scheme}//${location.host}/v1/chat/ws`);
  socket.addEventListener('open', () => {
    socket.send(JSON.stringify({ type: 'auth', api_key: auth.key() }));
  });
  return socket;
}
