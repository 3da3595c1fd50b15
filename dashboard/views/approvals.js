// Approvals: every permission request of AI tasks waiting for a human, on this daemon, its
// local sessions and the peers it holds keys for (the daemon's approval inbox, live through
// approvals-feed.js). Approve and Deny go to the daemon holding the request, which takes the
// first decision only: a late one is refused with who decided. Tool inputs are shown as text.
import { api } from '../api.js';
import { el, clear, table, section, ago, badge, toast } from '../dom.js';
import { subscribe, snapshot } from '../approvals-feed.js';

const DECIDED_SHOWN = 50;
const STATE_BADGE = { pending: 'waiting_approval', approved: 'completed', denied: 'failed', expired: 'failed', withdrawn: 'cancelled' };
const TARGET_BADGE = { live: 'online', down: 'offline', offline: 'offline', stopped: 'stopped', connecting: 'info', unsupported: 'unknown' };

function where(item) {
  if (item.targetKind === 'local') return 'this daemon';
  if (item.targetKind === 'session') return `session ${item.targetName}`;
  return item.targetName;
}

function targetName(t) {
  if (t.kind === 'local') return `${t.name} (this daemon)`;
  return t.kind === 'session' ? `session ${t.name}` : `peer ${t.name}`;
}

function pretty(value) {
  if (typeof value === 'string') return value;
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

function oneLine(value, max = 80) {
  const text = (typeof value === 'string' ? value : JSON.stringify(value)) || '';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function decidedBy(item) {
  if (item.state === 'expired') return 'nobody (timed out)';
  const by = item.decidedBy || '';
  return item.decidedVia ? `${by} via ${item.decidedVia}` : by;
}

export async function render(root, ctx) {
  const count = el('span', { class: 'muted', id: 'approvals-count' });
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Approvals'), count));
  const targetsBox = el('div', { id: 'approval-targets' }, el('p', { class: 'muted' }, 'Loading…'));
  const pendingBox = el('div', { id: 'approvals-pending' });
  const decidedBox = el('div', { id: 'approvals-decided' });
  root.append(section('Waiting for you', pendingBox), section('Recently decided', decidedBox), section('Where requests come from', targetsBox));
  const busy = new Set();

  async function decide(item, approved) {
    busy.add(item.id);
    draw();
    try {
      await api('POST', '/api/v1/approvals/decide', { body: { target: item.target, taskId: item.taskId, requestId: item.requestId, approved } });
      toast(`${approved ? 'Approved' : 'Denied'}: ${item.toolName} on ${where(item)}`);
    } catch (err) {
      toast(`Not decided: ${err.message}`, 'error');
    } finally {
      busy.delete(item.id);
      draw();
    }
  }

  function draw() {
    if (ctx.stale()) return;
    const { items, targets } = snapshot();
    const pending = items.filter((i) => i.state === 'pending').sort((a, b) => a.requestedAt - b.requestedAt);
    const decided = items.filter((i) => i.state !== 'pending').sort((a, b) => (b.decidedAt || 0) - (a.decidedAt || 0)).slice(0, DECIDED_SHOWN);
    count.textContent = `${pending.length} waiting`;
    clear(pendingBox).append(table(['Where', 'Task', 'Agent', 'Request', 'Input', 'Asked', ''], pending.map((item) =>
      el('tr', { class: 'approval-item', dataset: { id: item.id, state: item.state, target: item.target } },
        el('td', {}, where(item)),
        el('td', {}, el('code', {}, item.taskId.slice(0, 8)), el('div', { class: 'small muted value' }, oneLine(item.prompt, 60))),
        el('td', {}, item.agent),
        el('td', {}, el('strong', {}, item.toolName), el('div', { class: 'small' }, item.description)),
        el('td', { class: 'value' }, el('pre', { class: 'approval-input' }, pretty(item.toolInput)), item.toolInputTruncated ? el('div', { class: 'small muted' }, '(cut: larger than 256 KiB)') : null),
        el('td', { class: 'small' }, ago(item.requestedAt)),
        el('td', { class: 'actions' },
          el('button', { type: 'button', class: 'approve', disabled: busy.has(item.id), onclick: () => decide(item, true) }, 'Approve'),
          el('button', { type: 'button', class: 'deny danger', disabled: busy.has(item.id), onclick: () => decide(item, false) }, 'Deny')))),
    'No request is waiting.'));
    clear(decidedBox).append(table(['Where', 'Task', 'Request', 'Input', 'State', 'By', 'When'], decided.map((item) =>
      el('tr', { class: 'approval-item', dataset: { id: item.id, state: item.state, target: item.target } },
        el('td', {}, where(item)), el('td', {}, el('code', {}, item.taskId.slice(0, 8))), el('td', {}, item.toolName),
        el('td', { class: 'value small' }, oneLine(item.toolInput)), el('td', {}, badge(item.state, STATE_BADGE[item.state] || 'unknown')),
        el('td', { class: 'small' }, decidedBy(item)), el('td', { class: 'small' }, ago(item.decidedAt)))),
    'Nothing decided yet.'));
    clear(targetsBox).append(table(['Where', 'State', 'Waiting', 'Note'], targets.map((t) =>
      el('tr', { class: 'approval-target', dataset: { target: t.id, state: t.state } },
        el('td', {}, targetName(t)), el('td', {}, badge(t.state, TARGET_BADGE[t.state] || 'unknown')),
        el('td', {}, String(t.pending)), el('td', { class: 'small value' }, t.error || '')))));
  }

  let frame = null;
  let shown = false;
  const unsubscribe = subscribe(() => {
    if (frame !== null) return;
    frame = requestAnimationFrame(() => {
      frame = null;
      draw();
      if (!shown && !ctx.stale()) { shown = true; ctx.ready(); }
    });
  });
  const timer = setInterval(draw, 5000); // ages move on
  return () => { unsubscribe(); clearInterval(timer); if (frame !== null) cancelAnimationFrame(frame); };
}
