// Overview: this daemon and every local session, with totals. Refreshed slowly (15 s) and on
// demand; live detail is in the other views.
import { get } from '../api.js';
import { el, clear, table, badge, section, duration } from '../dom.js';

function card(label, value, detail) {
  return el('div', { class: 'stat' }, el('div', { class: 'stat-value' }, String(value)), el('div', { class: 'stat-label' }, label), detail ? el('div', { class: 'muted small' }, detail) : null);
}

function sessionRow(s) {
  const st = s.status || {};
  return el('tr', { dataset: { session: s.name } },
    el('td', {}, s.name), el('td', {}, s.hostname), el('td', {}, s.port ?? '—'), el('td', {}, s.pid ?? '—'),
    el('td', {}, badge(s.state)),
    el('td', {}, st.peers ? `${st.peers.online}/${st.peers.total}` : '—'),
    el('td', {}, st.jobs ? String(st.jobs.active) : '—'),
    el('td', {}, st.context ? String(st.context.entries) : '—'),
    el('td', {}, st.uptime !== undefined ? duration(st.uptime) : '—'),
    el('td', { class: 'muted' }, s.error || ''));
}

function draw(root, data) {
  const n = data.node;
  const t = data.totals;
  clear(root).append(
    el('div', { class: 'stats' },
      card('sessions running', `${t.sessionsRunning + 1}/${t.sessions + 1}`, 'this daemon included'),
      card('peers online', `${t.peersOnline}/${t.peers}`),
      card('jobs running', t.jobsActive),
      card('context entries', t.contextEntries)),
    section('This daemon', table(['Hostname', 'Node id', 'Version', 'Platform', 'Uptime', 'URL', 'TLS'], [[
      n.hostname, el('code', {}, n.nodeId), `${n.implementation} (protocol ${n.version})`, n.platform, duration(n.uptime),
      data.url || '—', data.tls ? badge('on', 'online') : badge('off', 'unknown')]])),
    section(`Local sessions (${data.sessions.length})`,
      table(['Name', 'Hostname', 'Port', 'PID', 'State', 'Peers', 'Jobs', 'Context', 'Uptime', ''], data.sessions.map(sessionRow),
        'No sessions in this data directory.')),
    el('p', { class: 'muted small' }, `Data directory ${data.dataDir} · updated ${new Date(data.timestamp).toLocaleTimeString()}`));
}

export async function render(root, ctx) {
  const body = el('div', { id: 'overview' });
  const refresh = el('button', { type: 'button', onclick: () => load() }, 'Refresh');
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Overview'), refresh), body);
  async function load() {
    const data = await get('/api/v1/dashboard/overview');
    if (!ctx.stale()) draw(body, data);
  }
  await load();
  ctx.ready();
  const timer = setInterval(() => load().catch(() => {}), 15000);
  return () => clearInterval(timer);
}
