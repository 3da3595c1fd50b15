// Peers: this daemon's registry (with pin and credential status) merged with what each running
// local session knows. Hostnames, addresses and ids come from peers: shown as text only.
import { api, get, targets } from '../api.js';
import { el, clear, table, badge, section, ago, field, toast } from '../dom.js';

async function gather() {
  const local = (await get('/api/v1/dashboard/peers')).peers;
  const merged = new Map(local.map((p) => [p.nodeId, { ...p, seenBy: ['this daemon'] }]));
  const sessions = (await targets(true)).filter((t) => t.kind === 'session' && t.reachable);
  const lists = await Promise.all(sessions.map((s) => get('/api/v1/peers', { target: s.id }).then((r) => [s, r.peers]).catch(() => [s, []])));
  for (const [session, peers] of lists) {
    for (const p of peers) {
      const known = merged.get(p.nodeId);
      if (known) {
        known.seenBy.push(session.label);
        if (p.status === 'online') known.status = 'online';
        known.lastSeen = Math.max(known.lastSeen || 0, p.lastSeen || 0);
      } else {
        merged.set(p.nodeId, { ...p, seenBy: [session.label], credential: null, pinned: null, target: null });
      }
    }
  }
  return [...merged.values()].sort((a, b) => (a.status === 'online' ? 0 : 1) - (b.status === 'online' ? 0 : 1) || (b.lastSeen || 0) - (a.lastSeen || 0));
}

function row(p, reload) {
  const remove = el('button', { type: 'button', class: 'small danger', onclick: async () => {
    if (remove.dataset.armed !== '1') { remove.dataset.armed = '1'; remove.textContent = 'Really remove?'; return; }
    try { await api('DELETE', `/api/v1/peers/${encodeURIComponent(p.nodeId)}`); toast(`Removed ${p.hostname}`); reload(); } catch (err) { toast(err.message, 'error'); }
  } }, 'Remove');
  const pin = p.pinned === null ? '—' : p.pinned ? el('span', { title: p.fingerprint }, badge('pinned', 'online'), ' ', el('code', {}, `${p.fingerprint.slice(0, 16)}…`)) : badge('not pinned', 'unknown');
  return el('tr', { class: 'peer', dataset: { node: p.nodeId } },
    el('td', { class: 'peer-hostname' }, p.hostname, p.name ? el('div', { class: 'muted small' }, `name: ${p.name}`) : null),
    el('td', {}, `${p.address}:${p.port}`, p.seenAt ? el('div', { class: 'muted small seen-at', title: 'unauthenticated: not followed until you run `loopsy peers confirm`' },
      `seen at ${p.seenAt.address}:${p.seenAt.port} (${p.seenAt.via}, ${ago(p.seenAt.at)})`) : null),
    el('td', {}, badge(p.status)),
    el('td', {}, ago(p.lastSeen)),
    el('td', {}, pin),
    el('td', {}, p.credential ? badge(p.credential, p.credential === 'none' ? 'offline' : 'online') : '—'),
    el('td', { class: 'small' }, `${p.platform} ${p.version}`),
    el('td', { class: 'small' }, p.seenBy.join(', ')),
    el('td', { class: 'small' }, el('code', {}, p.nodeId)),
    el('td', {}, p.target ? remove : null));
}

export async function render(root, ctx) {
  const list = el('div', { id: 'peer-list' });
  const address = el('input', { name: 'address', placeholder: '192.168.1.20', required: true });
  const port = el('input', { name: 'port', type: 'number', placeholder: '19532', min: 1, max: 65535 });
  const name = el('input', { name: 'name', placeholder: 'optional name' });
  const form = el('form', { class: 'inline', onsubmit: async (e) => {
    e.preventDefault();
    const body = { address: address.value.trim() };
    if (port.value) body.port = Number(port.value);
    if (name.value.trim()) body.name = name.value.trim();
    try { await api('POST', '/api/v1/peers', { body }); toast(`Added ${body.address}`); form.reset(); await load(); } catch (err) { toast(err.message, 'error'); }
  } }, field('Address', address), field('Port', port), field('Name', name), el('button', { type: 'submit' }, 'Add peer'));
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Peers'), el('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    section('Known peers', list), section('Add a peer by address', form));
  async function load() {
    const peers = await gather();
    if (ctx.stale()) return;
    clear(list).append(table(['Hostname', 'Address', 'Status', 'Last seen', 'Pin', 'Credential', 'Platform', 'Seen by', 'Node id', ''],
      peers.map((p) => row(p, load)), 'No peers yet: add one below, pair with `loopsy pair`, or wait for discovery.'));
  }
  await load();
  ctx.ready();
  const timer = setInterval(() => load().catch(() => {}), 15000);
  return () => clearInterval(timer);
}
