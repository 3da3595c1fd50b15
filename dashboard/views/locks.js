// Locks: the leases held on a daemon (this one, a local session or a peer), with their holders,
// fencing tokens and expiry, refreshed every two seconds. Read-only: a lock is released by its
// holder (`loopsy lock` does it when its command ends), or expires at its TTL.
import { get, targets } from '../api.js';
import { el, clear, table, section, ago, field, toast, targetSelect } from '../dom.js';

function expiresIn(lock) {
  const seconds = Math.max(0, (lock.expiresAt - Date.now()) / 1000);
  return `${seconds.toFixed(1)}s`;
}

function row(lock) {
  return el('tr', { class: 'lock', dataset: { name: lock.name } },
    el('td', {}, el('code', {}, lock.name)), el('td', { class: 'holder' }, lock.holder),
    el('td', { class: 'token' }, String(lock.token)), el('td', { class: 'small' }, expiresIn(lock)),
    el('td', { class: 'small' }, `${lock.ttl}s`), el('td', { class: 'small' }, ago(lock.acquiredAt)));
}

export async function render(root, ctx) {
  const all = await targets();
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const select = targetSelect(all, { filter: (t) => t.kind !== 'peer' || t.reachable, selected: params.get('target') || 'local' });
  const list = el('div', { id: 'lock-list' });
  const status = el('span', { class: 'muted small', id: 'locks-state' }, '');

  async function load() {
    const chosen = select.value;
    const data = await get('/api/v1/locks', { target: chosen });
    if (ctx.stale() || chosen !== select.value) return;
    clear(list).append(table(['Name', 'Holder', 'Token', 'Expires in', 'TTL', 'Acquired'], data.locks.map(row),
      'No locks are held on this daemon. Take one with `loopsy lock <peer> <name> -- <command>`.'));
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  select.addEventListener('change', () => load().catch((err) => toast(err.message, 'error')));
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Locks'), el('button', { type: 'button', onclick: () => load().catch((err) => toast(err.message, 'error')) }, 'Refresh')),
    section('Held locks', el('div', { class: 'inline' }, field('Daemon', select), status), list));
  await load();
  ctx.ready();
  const timer = setInterval(() => load().catch((err) => { status.textContent = `not updated: ${err.message}`; }), 2000);
  return () => clearInterval(timer);
}
