// Terminal: run one command on this daemon, a local session or a peer, streaming its output
// through POST /api/v1/execute/stream. Stop closes the stream, which ends the job.
import { stream, targets } from '../api.js';
import { el, clear, section, field, toast, targetSelect } from '../dom.js';

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

export async function render(root, ctx) {
  const all = await targets(true);
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

  const form = el('form', { class: 'inline', onsubmit: async (e) => {
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
  root.append(el('div', { class: 'toolbar' }, el('h1', {}, 'Terminal')),
    section('Run a command', form, el('p', { class: 'muted small' }, 'No shell: the first word is the program, the rest its arguments (quotes group words). The daemon\'s deny and allow lists apply.'), state, output));
  ctx.ready();
  command.focus();
  return () => { if (running) running.abort(); };
}
