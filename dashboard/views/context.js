// Context: browse a daemon's context store by prefix, edit and delete entries, and follow
// changes live through the watch stream (GET /api/v1/context/watch, events put/delete/expire).
import { api, get, stream, targets, contextPath } from '../api.js';
import { el, clear, table, section, ago, field, toast, targetSelect } from '../dom.js';

function preview(value) {
  return value.length > 160 ? `${value.slice(0, 160)}…` : value;
}

export async function render(root, ctx) {
  const all = await targets();
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const select = targetSelect(all, { filter: (t) => t.kind !== 'peer' || t.reachable, selected: params.get('target') || 'local' });
  const prefix = el('input', { name: 'prefix', placeholder: 'prefix, e.g. inbox:', value: params.get('prefix') || '' });
  const live = el('input', { type: 'checkbox', name: 'live', checked: true });
  const status = el('span', { class: 'muted small', id: 'watch-state' }, '');
  const list = el('div', { id: 'context-list' });
  const key = el('input', { name: 'key', placeholder: 'key', required: true, maxlength: 256 });
  const value = el('textarea', { name: 'value', rows: 4, placeholder: 'value', required: true });
  const ttl = el('input', { name: 'ttl', type: 'number', min: 1, placeholder: 'seconds (empty: none)' });
  const entries = new Map();
  let watcher = null;

  const editor = el('form', { id: 'context-editor', onsubmit: async (e) => {
    e.preventDefault();
    const body = { value: value.value };
    if (ttl.value) body.ttl = Number(ttl.value);
    try {
      const entry = await api('PUT', contextPath(key.value), { body, target: select.value });
      entries.set(entry.key, entry);
      draw();
      toast(`Saved ${entry.key}`);
    } catch (err) { toast(err.message, 'error'); }
  } }, field('Key', key), field('Value', value), field('TTL', ttl), el('button', { type: 'submit' }, 'Save'));

  function row(entry) {
    const del = el('button', { type: 'button', class: 'small danger', onclick: async () => {
      if (del.dataset.armed !== '1') { del.dataset.armed = '1'; del.textContent = 'Really delete?'; return; }
      try { await api('DELETE', contextPath(entry.key), { target: select.value }); entries.delete(entry.key); draw(); } catch (err) { toast(err.message, 'error'); }
    } }, 'Delete');
    const edit = el('button', { type: 'button', class: 'small', onclick: () => {
      key.value = entry.key; value.value = entry.value; ttl.value = entry.ttl || ''; value.focus();
    } }, 'Edit');
    return el('tr', { class: 'entry', dataset: { key: entry.key } },
      el('td', {}, el('code', {}, entry.key)), el('td', { class: 'value' }, preview(entry.value)),
      el('td', { class: 'small' }, entry.expiresAt ? `in ${Math.max(0, Math.round((entry.expiresAt - Date.now()) / 1000))}s` : '—'),
      el('td', { class: 'small' }, ago(entry.updatedAt)), el('td', { class: 'small' }, entry.fromNodeId || ''),
      el('td', { class: 'small' }, entry.revision ?? ''), el('td', { class: 'actions' }, edit, del));
  }

  function draw() {
    const rows = [...entries.values()].sort((a, b) => a.key.localeCompare(b.key)).map(row);
    clear(list).append(table(['Key', 'Value', 'Expires', 'Updated', 'From', 'Rev', ''], rows, 'No entries with this prefix.'));
  }

  async function load() {
    const data = await get(`/api/v1/context?prefix=${encodeURIComponent(prefix.value)}`, { target: select.value });
    if (ctx.stale()) return;
    entries.clear();
    for (const entry of data.entries) entries.set(entry.key, entry);
    draw();
    watch();
  }

  function watch() {
    if (watcher) watcher.abort();
    watcher = null;
    if (!live.checked) { status.textContent = ''; return; }
    const controller = new AbortController();
    watcher = controller;
    status.textContent = 'connecting…';
    stream('GET', `/api/v1/context/watch?prefix=${encodeURIComponent(prefix.value)}`, {
      target: select.value, signal: controller.signal,
      onOpen() { if (watcher === controller) status.textContent = 'live'; },
      onEvent(event) {
        const change = event.json;
        if (!change) return;
        if (change.type === 'put' && change.entry) entries.set(change.key, change.entry);
        else if (change.type === 'delete' || change.type === 'expire') entries.delete(change.key);
        else if (change.type === 'overflow') { load().catch(() => {}); return; }
        draw();
        const tr = list.querySelector(`tr[data-key="${CSS.escape(change.key)}"]`);
        if (tr) tr.classList.add('flash');
      },
    }).then(() => { if (watcher === controller) status.textContent = 'stream ended'; })
      .catch((err) => { if (!controller.signal.aborted) status.textContent = `stream lost: ${err.message}`; });
  }

  const browse = el('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); load().catch((err) => toast(err.message, 'error')); } },
    field('Daemon', select), field('Prefix', prefix), el('label', { class: 'check' }, live, ' Live'), el('button', { type: 'submit' }, 'Browse'), status);
  select.addEventListener('change', () => {
    // The old daemon's stream stops at once, so 'live' always means the daemon now chosen.
    if (watcher) watcher.abort();
    watcher = null;
    status.textContent = '';
    load().catch((err) => toast(err.message, 'error'));
  });
  live.addEventListener('change', watch);
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Context')), section('Browse', browse, list), section('Set an entry', editor));
  await load();
  ctx.ready();
  return () => { if (watcher) watcher.abort(); };
}
