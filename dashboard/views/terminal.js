// Terminal: interactive terminals (xterm.js over the attach WebSocket) on this daemon, a local
// session or a peer, one tab each; and running one command with its output streamed through
// POST /api/v1/execute/stream (Stop closes the stream, which ends the job).
import '../xterm-csp.js';
import { Terminal } from '../vendor/xterm/xterm.mjs';
import { FitAddon } from '../vendor/xterm/addon-fit.mjs';
import { api, get, stream, targets, url } from '../api.js';
import { el, clear, section, field, toast, targetSelect, table, badge, ago } from '../dom.js';

// Splits a command line into words: whitespace separates, '…' and "…" group, \ escapes.
export function words(line) {
  const out = [];
  let word = null;
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) word += line[++i];
      else word += c;
    } else if (c === '"' || c === "'") { quote = c; word = word ?? ''; }
    else if (c === '\\' && i + 1 < line.length) { word = (word ?? '') + line[++i]; }
    else if (/\s/.test(c)) { if (word !== null) out.push(word); word = null; }
    else word = (word ?? '') + c;
  }
  if (word !== null) out.push(word);
  return out;
}

// One attached terminal: xterm.js on a WebSocket. Server sizes are applied as they come (the
// session's size is the smallest attached client's); only our own window's size is sent.
function attach(host, target, info, onEnd) {
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, fontFamily: 'ui-monospace, SFMono-Regular, Menlo, monospace' });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(host);
  const wanted = fit.proposeDimensions() ?? { cols: 80, rows: 24 };
  const path = `/api/v1/terminals/${encodeURIComponent(info.id)}/attach?cols=${wanted.cols}&rows=${wanted.rows}`;
  const address = new URL(url(path, target), location.href);
  address.protocol = address.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(address);
  socket.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  let exit = null;
  socket.addEventListener('message', (event) => {
    if (typeof event.data !== 'string') { term.write(new Uint8Array(event.data)); return; }
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    if (message.type === 'attached' || message.type === 'size') term.resize(message.cols, message.rows);
    else if (message.type === 'exit') exit = message.code;
    else if (message.type === 'error') toast(message.message, 'error');
    else if (message.type === 'title') host.dataset.title = message.title;
  });
  socket.addEventListener('open', () => { host.dataset.attached = 'true'; term.focus(); });
  socket.addEventListener('close', () => { delete host.dataset.attached; onEnd(exit); });
  const send = (bytes) => { if (socket.readyState === WebSocket.OPEN) socket.send(bytes); };
  const typed = term.onData((data) => send(encoder.encode(data)));
  const binary = term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
  let last = `${wanted.cols}x${wanted.rows}`;
  const observer = new ResizeObserver(() => {
    const size = fit.proposeDimensions();
    if (!size || `${size.cols}x${size.rows}` === last) return;
    last = `${size.cols}x${size.rows}`;
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'resize', cols: size.cols, rows: size.rows }));
  });
  observer.observe(host);
  return () => { observer.disconnect(); typed.dispose(); binary.dispose(); socket.close(); term.dispose(); };
}

export async function render(root, ctx) {
  const all = await targets(true);
  const reachable = all.filter((t) => t.reachable);
  let target = reachable[0]?.id ?? 'local';
  const tabs = el('div', { class: 'tabs', role: 'tablist', id: 'terminal-tabs' });
  const list = el('div', { id: 'terminal-list' });
  const command = el('input', { name: 'term-command', placeholder: 'command (default: the shell there)', autocomplete: 'off', class: 'wide' });
  const name = el('input', { name: 'term-name', placeholder: 'name (optional)', autocomplete: 'off' });
  const host = el('div', { id: 'xterm-host', class: 'xterm-host' });
  const status = el('span', { id: 'term-status', class: 'muted small' }, 'not attached');
  const detach = el('button', { type: 'button', id: 'term-detach', disabled: true }, 'Detach');
  let detachCurrent = null;

  function end() {
    if (detachCurrent) { detachCurrent(); detachCurrent = null; }
    clear(host);
    detach.disabled = true;
  }

  function open(info) {
    end();
    status.textContent = `attached to ${info.name}`;
    detach.disabled = false;
    const mine = attach(host, target, info, (code) => {
      if (detachCurrent !== mine) return;
      status.textContent = code === null || code === undefined ? `detached from ${info.name}` : `${info.name} exited with ${code}`;
      detach.disabled = true;
      refresh();
    });
    detachCurrent = mine;
  }

  async function refresh() {
    let terminals;
    try {
      terminals = (await get('/api/v1/terminals', { target })).terminals;
    } catch (err) {
      clear(list).append(el('p', { class: 'muted' }, err.message));
      return;
    }
    const rows = terminals.map((t) => el('tr', { dataset: { terminal: t.name } },
      el('td', {}, t.name), el('td', { class: 'mono' }, [t.command, ...t.args].join(' ')),
      el('td', {}, badge(t.state === 'running' ? 'running' : `exited ${t.exitCode}`, t.state)),
      el('td', {}, `${t.cols}×${t.rows}`), el('td', {}, String(t.clients)), el('td', {}, ago(t.createdAt)),
      el('td', {},
        el('button', { type: 'button', class: 'attach', onclick: () => open(t) }, 'Attach'), ' ',
        el('button', { type: 'button', class: 'danger kill', onclick: async () => {
          try { await api('DELETE', `/api/v1/terminals/${encodeURIComponent(t.id)}`, { target }); } catch (err) { toast(err.message, 'error'); }
          refresh();
        } }, 'Kill'))));
    clear(list).append(table(['Name', 'Command', 'State', 'Size', 'Clients', 'Started', ''], rows, 'No terminals here yet.'));
  }

  function selectTab(id) {
    target = id;
    for (const tab of tabs.children) tab.setAttribute('aria-selected', String(tab.dataset.target === id));
    end();
    status.textContent = 'not attached';
    refresh();
  }
  for (const t of reachable) {
    tabs.append(el('button', { type: 'button', role: 'tab', class: 'tab', dataset: { target: t.id }, onclick: () => selectTab(t.id) },
      `${t.label}${t.online ? '' : ' (offline)'}`));
  }

  const create = el('form', { class: 'inline', id: 'term-new', onsubmit: async (e) => {
    e.preventDefault();
    const argv = words(command.value);
    const body = {};
    if (argv.length) { body.command = argv[0]; body.args = argv.slice(1); }
    if (name.value.trim()) body.name = name.value.trim();
    try {
      const info = await api('POST', '/api/v1/terminals', { body, target });
      await refresh();
      open(info);
    } catch (err) { toast(err.message, 'error'); }
  } }, field('Command', command), field('Name', name), el('button', { type: 'submit' }, 'New terminal'));
  detach.addEventListener('click', () => { end(); status.textContent = 'detached'; refresh(); });

  const once = runOnce(all);
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Terminal')),
    section('Interactive terminals', tabs, create, list, el('div', { class: 'term-bar' }, status, detach), host,
      el('p', { class: 'muted small' }, 'Terminals keep running when you detach or close the page; attach again from here, `loopsy term attach` or an agent.')),
    once.card);
  selectTab(target);
  ctx.ready();
  return () => { end(); once.stop(); };
}

function runOnce(all) {
  const select = targetSelect(all, { filter: (t) => t.reachable });
  const command = el('input', { name: 'command', placeholder: 'e.g. ls -la /tmp', autocomplete: 'off', required: true, class: 'wide' });
  const cwd = el('input', { name: 'cwd', placeholder: 'working directory (optional)' });
  const output = el('pre', { id: 'terminal-output', class: 'terminal' });
  const state = el('span', { id: 'terminal-state', class: 'muted small' });
  const run = el('button', { type: 'submit' }, 'Run');
  const stop = el('button', { type: 'button', disabled: true, class: 'danger' }, 'Stop');
  let running = null;

  function line(kind, text) {
    output.append(el('span', { class: `out-${kind}` }, text));
    output.scrollTop = output.scrollHeight;
  }

  const form = el('form', { class: 'inline', id: 'run-once', onsubmit: async (e) => {
    e.preventDefault();
    const argv = words(command.value);
    if (argv.length === 0) return;
    if (running) running.abort();
    const controller = new AbortController();
    running = controller;
    run.disabled = true; stop.disabled = false;
    clear(output);
    line('meta', `$ ${argv.join(' ')}   [${select.selectedOptions[0]?.textContent ?? select.value}]\n`);
    state.textContent = 'running';
    const body = { command: argv[0], args: argv.slice(1) };
    if (cwd.value.trim()) body.cwd = cwd.value.trim();
    try {
      await stream('POST', '/api/v1/execute/stream', { body, target: select.value, signal: controller.signal, onEvent(event) {
        const ev = event.json;
        if (!ev) return;
        if (ev.type === 'stdout' || ev.type === 'stderr') line(ev.type, ev.data);
        else if (ev.type === 'exit') { state.textContent = `exited with ${ev.exitCode ?? ev.data}${ev.timedOut ? ' (timed out)' : ''}`; line('meta', `\n[exit ${ev.data}]\n`); }
        else if (ev.type === 'error') { line('stderr', `${ev.data}\n`); state.textContent = 'error'; }
      } });
    } catch (err) {
      if (controller.signal.aborted) { state.textContent = 'stopped'; line('meta', '\n[stopped]\n'); }
      else { state.textContent = 'failed'; line('stderr', `${err.message}\n`); toast(err.message, 'error'); }
    } finally {
      if (running === controller) { running = null; run.disabled = false; stop.disabled = true; }
    }
  } }, field('Where', select), field('Command', command), field('In', cwd), run, stop);
  stop.addEventListener('click', () => { if (running) running.abort(); });
  const card = section('Run a command once', form, el('p', { class: 'muted small' }, 'No shell: the first word is the program, the rest its arguments (quotes group words). The daemon\'s deny and allow lists apply.'), state, output);
  return { card, stop: () => { if (running) running.abort(); } };
}
