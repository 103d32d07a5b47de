// A held step's decision: Approve sends the step's token (never shown), Reject a reason.

import { api, signals } from './api.js';
import { alertBox, fill, h, pretty, time } from './dom.js';

function what(item) {
  return h('dl', { class: 'facts' },
    h('dt', {}, 'Intent'), h('dd', {}, item.intent),
    item.host ? [h('dt', {}, 'Host'), h('dd', { class: 'host' }, item.host)] : null,
    item.command ? [h('dt', {}, 'Command'), h('dd', {}, h('code', { class: 'command' }, item.command))] : null,
    h('dt', {}, item.status === 'held' ? 'Reason' : 'Waits for'), h('dd', { class: 'reason' }, item.reason || '–'),
    h('dt', {}, 'Deadline'), h('dd', {}, h('time', { datetime: item.deadline || '' }, time(item.deadline))));
}

function decide(item, done) {
  const status = h('div', { 'aria-live': 'polite' });
  const reason = h('input', { type: 'text', name: 'reason', 'aria-label': 'Reason for rejecting',
    placeholder: 'Reason for rejecting', maxlength: 1000 });
  const act = async (path, body) => {
    try {
      await api(`/v1/jobs/${encodeURIComponent(item.job_id)}/${path}`, { method: 'POST', body });
      fill(status, h('p', { class: 'ok' }, path === 'approve' ? 'Approved.' : 'Rejected.'));
      signals.dispatchEvent(new Event('changed'));
      done();
    } catch (error) {
      fill(status, alertBox(error.message));
    }
  };
  return h('div', { class: 'decide' },
    h('button', { type: 'button', class: 'approve', onclick: () => act('approve', { token: item.token }) }, 'Approve'),
    reason,
    h('button', { type: 'button', class: 'reject',
      onclick: () => act('reject', { reason: reason.value.trim() || 'rejected in the console' }) }, 'Reject'),
    status);
}

/** A held or waiting step: what it will run, why, until when; Approve / Reject when held. */
export function pendingCard(item, done) {
  return h('article', { class: `pending s-${item.status}`, 'data-job': item.job_id },
    h('h3', {}, item.status === 'held' ? 'Held for approval' : 'Waiting', ' · ',
      h('a', { href: `/console/jobs/${encodeURIComponent(item.job_id)}`, 'data-nav': true }, item.job_id),
      ` step ${item.index}`),
    what(item),
    h('details', {}, h('summary', {}, 'Inputs'), h('pre', {}, pretty(item.inputs || {}))),
    item.status === 'held' ? decide(item, done) : null);
}
