// The shell: sign-in, the header, and a router that draws the page the URL names.

import { api, auth, signals } from './api.js';
import { alertBox, fill, h } from './dom.js';
import { startChat, stopChat } from './chat.js';
import { inboxPage } from './inbox.js';
import { jobPage, jobsPage } from './jobs.js';
import { registryPage } from './registry.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const chat = document.getElementById('chat');
const ROUTES = [
  [/^\/console\/?$/, () => jobsPage],
  [/^\/console\/jobs\/?$/, () => jobsPage],
  [/^\/console\/jobs\/([^/]+)$/, (m) => (root, signal) => jobPage(root, signal, decodeURIComponent(m[1]))],
  [/^\/console\/inbox\/?$/, () => inboxPage],
  [/^\/console\/registry\/?$/, () => registryPage],
];
let current = new AbortController();
let counting = null;

function notFound(root) {
  fill(root, h('h1', {}, 'Page not found'), h('p', {}, 'No console page has this address.'));
}

/** Draw the page of the current URL (after sign-in). */
export async function render() {
  current.abort();
  current = new AbortController();
  if (!auth.key()) return signIn();
  const path = location.pathname;
  const match = ROUTES.map(([re, page]) => [path.match(re), page]).find(([m]) => m);
  const page = match ? match[1](match[0]) : notFound;
  try {
    await page(main, current.signal);
  } catch (error) {
    if (current.signal.aborted || error.name === 'AbortError') return;
    fill(main, alertBox(error.message));
  }
}

/** Follow a link without reloading; the URL stays shareable. */
export function go(href) {
  history.pushState(null, '', href);
  render();
  main.focus();
}

function signIn(message) {
  nav.hidden = true;
  chat.hidden = true;
  stopChat();
  clearInterval(counting);
  const input = h('input', { id: 'api-key', name: 'api-key', type: 'password', required: true,
    autocomplete: 'off', spellcheck: 'false' });
  const status = h('div', { 'aria-live': 'assertive' }, message ? alertBox(message) : null);
  const form = h('form', { method: 'post', class: 'sign-in', onsubmit: async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    try {
      await api('/v1/intents', { key });
    } catch (error) {
      fill(status, alertBox(error.status === 401
        ? `That API key was not accepted: ${error.message}.` : error.message));
      return;
    }
    auth.save(key);
    started();
  } },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'Sign in with an API key of your tenant (orchestrator keys create). It is kept in '
    + 'this tab only and sent to the API as a bearer header.'),
  h('label', { for: 'api-key' }, 'API key'), input,
  h('button', { type: 'submit' }, 'Sign in'), status);
  fill(main, form);
  input.focus();
}

async function countInbox() {
  try {
    const items = await api('/v1/inbox');
    const count = document.getElementById('inbox-count');
    count.textContent = String(items.length);
    count.classList.toggle('some', items.length > 0);
  } catch { /* the next tick tries again; a 401 signs out */ }
}

function started() {
  nav.hidden = false;
  chat.hidden = false;
  render(); // the page first: the sidebar and the count follow
  startChat(chat);
  countInbox();
  clearInterval(counting);
  counting = setInterval(countInbox, 3000);
}

document.addEventListener('click', (event) => {
  const anchor = event.target.closest('a[data-nav]');
  if (!anchor || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(anchor.getAttribute('href'));
});
window.addEventListener('popstate', render);
document.getElementById('sign-out').addEventListener('click', () => {
  auth.clear();
  signIn();
});
signals.addEventListener('unauthorized', (event) => {
  auth.clear();
  signIn(`Signed out: ${event.detail}.`);
});
signals.addEventListener('changed', countInbox);

if (auth.key()) started(); else signIn();
