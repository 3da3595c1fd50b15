// Messages: each local daemon's inbox, what it sent, and a form to send, across this daemon and
// its local sessions. Sending and acknowledging go through the daemons' messages API
// (/api/v1/messages), so the daemon keeps the message in its durable outbox and retries until it
// is delivered; the view never writes the §6 context keys itself. The outbox is read from the
// outbox:<id> and ack:<acknowledger> entries (§6), which the daemons maintain. New messages and
// acks arrive live through each daemon's watch stream.
import { api, get, stream, targets } from '../api.js';
import { el, clear, table, section, ago, badge, field, toast, targetSelect } from '../dom.js';

// Browsers allow 6 connections per host: one is the approvals feed (the navigation's count), and
// requests need room too.
const MAX_WATCHES = 3;

function parse(entry) {
  try {
    const env = JSON.parse(entry.value);
    if (env && typeof env === 'object' && typeof env.id === 'string') return env;
  } catch { /* not an envelope */ }
  return null;
}

async function gather(daemons) {
  return Promise.all(daemons.map(async (t) => {
    const list = (prefix) => get(`/api/v1/context?prefix=${encodeURIComponent(prefix)}`, { target: t.id }).then((r) => r.entries);
    try {
      const [inbox, outbox, acks] = await Promise.all([
        get('/api/v1/messages/inbox', { target: t.id }).then((r) => r.messages), list('outbox:'), list('ack:'),
      ]);
      return { daemon: t, inbox, outbox, acks: new Map(acks.map((a) => [a.key.slice(4), a.value])) };
    } catch (err) {
      return { daemon: t, inbox: [], outbox: [], acks: new Map(), error: err.message };
    }
  }));
}

function ackState(env, acks) {
  if (acks.has(`${env.to}:${env.id}`)) return badge('acked', 'online');
  const acked = acks.get(env.to);
  if (!acked) return badge('not acked', 'unknown');
  if (acked === env.id) return badge('acked', 'online');
  const ackedTs = Number(String(acked).split('-')[0]);
  return ackedTs >= env.ts ? badge('later one acked', 'running') : badge('not acked', 'unknown');
}

// How a sender's daemon names a peer when sending: the user's name for it, else its node id.
function peerOption(peer) {
  const value = peer.name || peer.nodeId;
  const label = peer.name && peer.name !== peer.hostname ? `${peer.name} — ${peer.hostname}` : peer.hostname;
  return el('option', { value }, `${label}${peer.status === 'online' ? '' : ` (${peer.status})`}`);
}

export async function render(root, ctx) {
  const all = await targets(true);
  const daemons = () => all.filter((t) => t.kind !== 'peer' && t.reachable);
  const inboxBox = el('div', { id: 'inbox' });
  const outboxBox = el('div', { id: 'outbox' });
  const from = targetSelect(all, { name: 'from', filter: (t) => t.kind !== 'peer' && t.reachable });
  const to = el('select', { name: 'to' });
  const type = el('select', { name: 'type' }, ['chat', 'request', 'response', 'broadcast'].map((v) => el('option', { value: v }, v)));
  const text = el('textarea', { name: 'body', rows: 3, required: true, placeholder: 'message' });
  const watches = [];

  // The recipients a sender can reach are the peers in its own registry.
  async function fillRecipients() {
    const sender = from.value;
    clear(to);
    try {
      const peers = (await get('/api/v1/peers', { target: sender })).peers;
      if (ctx.stale() || from.value !== sender) return;
      to.append(...peers.map(peerOption));
      if (peers.length === 0) to.append(el('option', { value: '', disabled: true }, 'no peers known to this daemon'));
    } catch (err) {
      to.append(el('option', { value: '', disabled: true }, `cannot list its peers: ${err.message}`));
    }
  }
  from.addEventListener('change', () => fillRecipients());

  async function acknowledge(daemon, message) {
    try {
      const acked = await api('POST', '/api/v1/messages/ack', { body: { key: message.key }, target: daemon.id });
      if (acked.state === 'delivered') toast(`Acknowledged ${message.id}`);
      else toast(`Acknowledged ${message.id}; the ack waits for ${message.from}: ${acked.error || acked.state}`);
      await load();
    } catch (err) { toast(err.message, 'error'); }
  }

  function inboxRow(daemon, message) {
    const ack = el('button', { type: 'button', class: 'small', onclick: () => acknowledge(daemon, message) }, 'Ack');
    return el('tr', { class: 'message', dataset: { key: message.key, daemon: daemon.id } },
      el('td', {}, daemon.label), el('td', {}, message.from), el('td', {}, message.to), el('td', {}, badge(message.type, 'info')),
      el('td', { class: 'value' }, message.body), el('td', { class: 'small' }, ago(message.ts)), el('td', {}, ack));
  }

  function outboxRow(daemon, entry, acks) {
    const env = parse(entry);
    return el('tr', { class: 'message', dataset: { key: entry.key, daemon: daemon.id } },
      el('td', {}, daemon.label), el('td', {}, env ? env.to : '?'), el('td', {}, env ? badge(env.type, 'info') : ''),
      el('td', { class: 'value' }, env ? env.body : entry.value), el('td', { class: 'small' }, ago(env ? env.ts : entry.updatedAt)),
      el('td', {}, env ? ackState(env, acks) : ''));
  }

  async function load() {
    const found = await gather(daemons());
    if (ctx.stale()) return;
    const inbox = found.flatMap((f) => f.inbox.map((message) => ({ f, message }))).sort((a, b) => b.message.ts - a.message.ts);
    const outbox = found.flatMap((f) => f.outbox.map((entry) => ({ f, entry }))).sort((a, b) => b.entry.updatedAt - a.entry.updatedAt);
    clear(inboxBox).append(table(['Daemon', 'From', 'To', 'Type', 'Message', 'Sent', ''], inbox.map(({ f, message }) => inboxRow(f.daemon, message)), 'No messages.'),
      ...found.filter((f) => f.error).map((f) => el('p', { class: 'error small' }, `${f.daemon.label}: ${f.error}`)));
    clear(outboxBox).append(table(['Daemon', 'To', 'Type', 'Message', 'Sent', 'Ack'], outbox.map(({ f, entry }) => outboxRow(f.daemon, entry, f.acks)), 'Nothing sent.'));
  }

  const compose = el('form', { id: 'compose', onsubmit: async (e) => {
    e.preventDefault();
    const sender = all.find((t) => t.id === from.value);
    if (!sender || !to.value) { toast('Choose a sender and one of its peers', 'error'); return; }
    try {
      // The sender's daemon delivers it now or keeps it in its outbox and retries.
      const sent = await api('POST', '/api/v1/messages', { body: { to: to.value, type: type.value, body: text.value }, target: sender.id });
      text.value = '';
      if (sent.state === 'delivered') toast(`Sent to ${sent.to}`);
      else toast(`Queued for ${sent.to}, delivered when it answers: ${sent.error || sent.state}`);
      await load();
    } catch (err) { toast(`Not sent: ${err.message}`, 'error'); }
  } }, field('From', from), field('To', to), field('Type', type), field('Message', text), el('button', { type: 'submit' }, 'Send'));

  function watchAll() {
    let pending = null;
    const reload = () => { clearTimeout(pending); pending = setTimeout(() => load().catch(() => {}), 50); };
    // One stream per daemon for all three kinds of key (a stream per prefix would take three of
    // the browser's few connections per host).
    const relevant = (event) => /^(inbox|outbox|ack):/.test((event.json && event.json.key) || '');
    for (const daemon of daemons().slice(0, MAX_WATCHES)) {
      const controller = new AbortController();
      watches.push(controller);
      stream('GET', '/api/v1/context/watch', { target: daemon.id, signal: controller.signal, onEvent: (event) => { if (relevant(event)) reload(); } })
        .catch(() => {});
    }
  }

  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Messages'), el('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    section('Inbox (all local daemons)', inboxBox), section('Outbox', outboxBox), section('Compose', compose));
  await fillRecipients();
  await load();
  watchAll();
  ctx.ready();
  return () => { for (const w of watches) w.abort(); };
}
