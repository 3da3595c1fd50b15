// Messages: the §6 convention over context entries, across this daemon and its local sessions.
// inbox:<recipient>:<id> on the recipient, outbox:<id> on the sender, ack:<acknowledger> on the
// sender (the latest acknowledged id). New inbox entries arrive live through the watch stream.
import { api, get, stream, targets, contextPath } from '../api.js';
import { el, clear, table, section, ago, badge, field, toast, targetSelect } from '../dom.js';

const MAX_WATCHES = 4; // browsers allow 6 connections per host; leave room for requests

function parse(entry) {
  try {
    const env = JSON.parse(entry.value);
    if (env && typeof env === 'object' && typeof env.id === 'string') return env;
  } catch { /* not an envelope */ }
  return null;
}

function hex4() {
  return crypto.getRandomValues(new Uint16Array(1))[0].toString(16).padStart(4, '0');
}

async function gather(daemons) {
  return Promise.all(daemons.map(async (t) => {
    const list = (prefix) => get(`/api/v1/context?prefix=${encodeURIComponent(prefix)}`, { target: t.id }).then((r) => r.entries);
    try {
      const [inbox, outbox, acks] = await Promise.all([list('inbox:'), list('outbox:'), list('ack:')]);
      return { daemon: t, inbox, outbox, acks: new Map(acks.map((a) => [a.key.slice(4), a.value])) };
    } catch (err) {
      return { daemon: t, inbox: [], outbox: [], acks: new Map(), error: err.message };
    }
  }));
}

function ackState(env, acks) {
  const acked = acks.get(env.to);
  if (!acked) return badge('not acked', 'unknown');
  if (acked === env.id) return badge('acked', 'online');
  const ackedTs = Number(String(acked).split('-')[0]);
  return ackedTs >= env.ts ? badge('later one acked', 'running') : badge('not acked', 'unknown');
}

export async function render(root, ctx) {
  let all = await targets(true);
  const daemons = () => all.filter((t) => t.kind !== 'peer' && t.reachable);
  const inboxBox = el('div', { id: 'inbox' });
  const outboxBox = el('div', { id: 'outbox' });
  const from = targetSelect(all, { name: 'from', filter: (t) => t.kind !== 'peer' && t.reachable });
  const to = el('select', { name: 'to' });
  const type = el('select', { name: 'type' }, ['chat', 'request', 'response', 'broadcast'].map((v) => el('option', { value: v }, v)));
  const text = el('textarea', { name: 'body', rows: 3, required: true, placeholder: 'message' });
  const watches = [];

  function fillRecipients() {
    const names = [...new Set(all.filter((t) => t.reachable).map((t) => t.hostname))].sort();
    clear(to).append(...names.map((h) => el('option', { value: h }, h)));
  }

  async function acknowledge(daemon, entry, env) {
    const sender = all.find((t) => t.reachable && t.hostname === env.from);
    if (!sender) { toast(`No reachable daemon is called ${env.from}`, 'error'); return; }
    try {
      await api('PUT', contextPath(`ack:${daemon.hostname}`), { body: { value: env.id, ttl: 7200 }, target: sender.id });
      await api('DELETE', contextPath(entry.key), { target: daemon.id });
      toast(`Acknowledged ${env.id}`);
      await load();
    } catch (err) { toast(err.message, 'error'); }
  }

  function inboxRow(daemon, entry) {
    const env = parse(entry);
    const ack = env ? el('button', { type: 'button', class: 'small', onclick: () => acknowledge(daemon, entry, env) }, 'Ack') : null;
    return el('tr', { class: 'message', dataset: { key: entry.key, daemon: daemon.id } },
      el('td', {}, daemon.label), el('td', {}, env ? env.from : '?'), el('td', {}, env ? env.to : '?'),
      el('td', {}, env ? badge(env.type, 'info') : badge('not an envelope', 'offline')),
      el('td', { class: 'value' }, env ? env.body : entry.value), el('td', { class: 'small' }, ago(env ? env.ts : entry.updatedAt)), el('td', {}, ack));
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
    const byTime = (a, b) => b.entry.updatedAt - a.entry.updatedAt;
    const inbox = found.flatMap((f) => f.inbox.map((entry) => ({ f, entry }))).sort(byTime);
    const outbox = found.flatMap((f) => f.outbox.map((entry) => ({ f, entry }))).sort(byTime);
    clear(inboxBox).append(table(['Daemon', 'From', 'To', 'Type', 'Message', 'Sent', ''], inbox.map(({ f, entry }) => inboxRow(f.daemon, entry)), 'No messages.'),
      ...found.filter((f) => f.error).map((f) => el('p', { class: 'error small' }, `${f.daemon.label}: ${f.error}`)));
    clear(outboxBox).append(table(['Daemon', 'To', 'Type', 'Message', 'Sent', 'Ack'], outbox.map(({ f, entry }) => outboxRow(f.daemon, entry, f.acks)), 'Nothing sent.'));
  }

  const compose = el('form', { id: 'compose', onsubmit: async (e) => {
    e.preventDefault();
    const sender = all.find((t) => t.id === from.value);
    const recipient = all.find((t) => t.reachable && t.hostname === to.value);
    if (!sender || !recipient) return;
    const ts = Date.now();
    const id = `${ts}-${sender.hostname}-${hex4()}`;
    const value = JSON.stringify({ from: sender.hostname, to: recipient.hostname, ts, id, type: type.value, body: text.value });
    try {
      // Inbox first: if delivery fails, nothing claims it was sent (§6.5).
      await api('PUT', contextPath(`inbox:${recipient.hostname}:${id}`), { body: { value, ttl: 3600 }, target: recipient.id });
      await api('PUT', contextPath(`outbox:${id}`), { body: { value, ttl: 3600 }, target: sender.id });
      text.value = '';
      toast(`Sent to ${recipient.hostname}`);
      await load();
    } catch (err) { toast(`Not sent: ${err.message}`, 'error'); }
  } }, field('From', from), field('To', to), field('Type', type), field('Message', text), el('button', { type: 'submit' }, 'Send'));

  function watchAll() {
    let pending = null;
    const reload = () => { clearTimeout(pending); pending = setTimeout(() => load().catch(() => {}), 50); };
    for (const daemon of daemons().slice(0, MAX_WATCHES)) {
      const controller = new AbortController();
      watches.push(controller);
      stream('GET', `/api/v1/context/watch?prefix=${encodeURIComponent('inbox:')}`, { target: daemon.id, signal: controller.signal, onEvent: reload })
        .catch(() => {});
    }
  }

  fillRecipients();
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Messages'), el('button', { type: 'button', onclick: () => load() }, 'Refresh')),
    section('Inbox (all local daemons)', inboxBox), section('Outbox', outboxBox), section('Compose', compose));
  await load();
  watchAll();
  ctx.ready();
  return () => { for (const w of watches) w.abort(); };
}
