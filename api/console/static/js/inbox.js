// The inbox: every held or waiting step of the tenant's jobs.

import { api } from './api.js';
import { fill, h } from './dom.js';
import { pendingCard } from './approvals.js';

export async function inboxPage(root, signal) {
  const list = h('div', { class: 'cards' });
  fill(root, h('h1', {}, 'Inbox'),
    h('p', {}, 'Steps held for your approval, and steps waiting for another system.'), list);
  let shown = null;
  const draw = async () => {
    const items = await api('/v1/inbox', { signal });
    const seen = items.map((i) => `${i.job_id}/${i.index}/${i.status}`).join(' ');
    if (seen === shown) return; // a redraw would clear a reason being typed
    shown = seen;
    fill(list, items.length ? items.map((item) => pendingCard(item, draw))
      : h('p', { class: 'empty' }, 'Nothing is held or waiting.'));
  };
  await draw();
  const timer = setInterval(() => draw().catch(() => {}), 3000);
  signal.addEventListener('abort', () => clearInterval(timer));
}
