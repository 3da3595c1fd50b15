// AI tasks (§2.8): dispatch to this daemon, a local session or a peer; follow a task's events
// live; approve or deny a pending tool request; cancel. Everything an agent prints is text.
import { api, get, stream, targets } from '../api.js';
import { el, clear, table, section, ago, badge, field, toast, targetSelect } from '../dom.js';

const ACTIVE = new Set(['pending', 'running', 'waiting_approval']);

function show(value) {
  if (value === undefined || value === null) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function describe(ev) {
  const d = ev.data;
  switch (ev.type) {
    case 'text': return ['text', show(d)];
    case 'thinking': return ['thinking', `(thinking) ${show(d)}`];
    case 'tool_use': return ['tool', `→ ${show(d && d.name)} ${show(d && d.input)}`];
    case 'tool_result': return ['tool', `← ${show(d && d.name)} ${show(d && (d.output ?? d.content))}`];
    case 'permission_request': return ['ask', `? ${show(d && d.toolName)} wants approval: ${show(d && d.description)}`];
    case 'status': return ['meta', `[${show(d && d.status)}${d && d.approved !== undefined ? (d.approved ? ', approved' : ', denied') : ''}]`];
    case 'error': return ['error', `error: ${show(d)}`];
    case 'result': return ['result', `result: ${show(d && d.text)}${d && d.cost !== undefined ? ` (cost $${d.cost})` : ''}`];
    case 'exit': return ['meta', `[exit ${show(d && d.exitCode)}${d && d.signal ? ` signal ${d.signal}` : ''}]`];
    default: return ['meta', `[${show(ev.type)}] ${show(d)}`];
  }
}

export async function render(root, ctx) {
  const header = el('div', { class: 'toolbar' }, el('h1', {}, 'AI Tasks'));
  root.append(header);
  try {
    await get('/api/v1/ai-tasks');
  } catch (err) {
    if (err.status !== 404) throw err;
    root.append(section('Not available', el('p', { id: 'tasks-unavailable' }, 'This daemon has no AI task routes (GET /api/v1/ai-tasks answered 404).')));
    ctx.ready();
    return null;
  }
  const all = await targets(true);
  const reachable = all.filter((t) => t.reachable && (t.kind !== 'peer' || t.online));
  const listBox = el('div', { id: 'task-list' });
  const detail = el('div', { id: 'task-detail', class: 'muted' }, 'Choose a task, or dispatch one.');
  const where = targetSelect(all, { filter: (t) => t.reachable });
  const agent = el('select', { name: 'agent' }, ['auto', 'claude', 'gemini', 'codex'].map((a) => el('option', { value: a }, a)));
  const mode = el('select', { name: 'permissionMode' }, ['default', 'acceptEdits', 'dontAsk', 'bypassPermissions'].map((m) => el('option', { value: m }, m)));
  const model = el('input', { name: 'model', placeholder: 'model (optional)' });
  const cwd = el('input', { name: 'cwd', placeholder: 'working directory (optional)' });
  const prompt = el('textarea', { name: 'prompt', rows: 3, required: true, placeholder: 'what should the agent do?' });
  let following = null;
  let tasks = [];

  async function loadList() {
    const found = await Promise.all(reachable.map((t) => get('/api/v1/ai-tasks', { target: t.id }).then((r) => r.tasks.map((task) => ({ task, t }))).catch(() => [])));
    if (ctx.stale()) return;
    tasks = found.flat().sort((a, b) => b.task.startedAt - a.task.startedAt);
    clear(listBox).append(table(['Where', 'Task', 'Agent', 'Status', 'Prompt', 'Started'], tasks.map(({ task, t }) =>
      el('tr', { class: 'task clickable', dataset: { task: task.taskId, status: task.status }, onclick: () => open(task, t) },
        el('td', {}, t.label), el('td', {}, el('code', {}, task.taskId.slice(0, 8))), el('td', {}, task.agent || ''),
        el('td', {}, badge(task.status)), el('td', { class: 'value' }, task.prompt), el('td', { class: 'small' }, ago(task.startedAt)))), 'No tasks yet.'));
  }

  function open(task, t) {
    if (following) following.abort();
    const controller = new AbortController();
    following = controller;
    const base = `/api/v1/ai-tasks/${encodeURIComponent(task.taskId)}`;
    const state = el('span', { class: 'task-state' }, badge(task.status));
    const banner = el('div', { id: 'approval' });
    const log = el('div', { class: 'task-log', id: 'task-log' });
    const cancel = el('button', { type: 'button', class: 'danger', onclick: async () => {
      try { await api('DELETE', base, { target: t.id }); toast('Cancel requested'); } catch (err) { toast(err.message, 'error'); }
    } }, ACTIVE.has(task.status) ? 'Cancel' : 'Forget');
    detail.className = '';
    clear(detail).append(el('div', { class: 'toolbar' }, el('h3', {}, `Task ${task.taskId.slice(0, 8)} on ${t.label}`), state, cancel),
      el('p', { class: 'value' }, task.prompt), banner, log);
    let lastId = null;
    let finished = !ACTIVE.has(task.status);

    function ask(request) {
      const decide = (approved) => async () => {
        try {
          await api('POST', `${base}/approve`, { body: { requestId: request.requestId, approved }, target: t.id });
          clear(banner);
          toast(approved ? 'Approved' : 'Denied');
        } catch (err) { toast(err.message, 'error'); }
      };
      clear(banner).append(el('div', { class: 'approval', dataset: { request: request.requestId } },
        el('strong', {}, `${show(request.toolName)} needs approval`), el('p', {}, show(request.description)),
        el('pre', {}, JSON.stringify(request.toolInput ?? {}, null, 2)),
        el('button', { type: 'button', class: 'approve', onclick: decide(true) }, 'Approve'),
        el('button', { type: 'button', class: 'deny danger', onclick: decide(false) }, 'Deny')));
    }

    function onEvent(event) {
      if (event.id) lastId = event.id;
      const ev = event.json;
      if (!ev || typeof ev !== 'object') return;
      const [kind, text] = describe(ev);
      log.append(el('div', { class: `ev ev-${kind}`, dataset: { type: String(ev.type) } }, text));
      log.scrollTop = log.scrollHeight;
      if (ev.type === 'permission_request' && ev.data) {
        ask(ev.data);
        clear(state).append(badge('waiting_approval'));
        loadList().catch(() => {});
      }
      if (ev.type === 'status' && ev.data && ev.data.status) {
        clear(state).append(badge(ev.data.status));
        if (ev.data.status === 'running') clear(banner);
        if (!ACTIVE.has(ev.data.status)) finished = true;
        loadList().catch(() => {});
      }
      if (ev.type === 'exit') { finished = true; clear(banner); loadList().catch(() => {}); }
    }

    (async () => {
      // The stream ends when the task ends; a cut connection is resumed from the last event id.
      for (let attempt = 0; attempt < 5 && !controller.signal.aborted; attempt++) {
        try {
          await stream('GET', `${base}/stream`, { target: t.id, signal: controller.signal, lastEventId: lastId, onEvent });
          // The stream ends when the task has its final state: show it in the list too.
          if (!controller.signal.aborted) loadList().catch(() => {});
        } catch (err) {
          if (controller.signal.aborted) return;
          log.append(el('div', { class: 'ev ev-error' }, `stream: ${err.message}`));
        }
        if (finished || controller.signal.aborted) return;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    })();
  }

  const form = el('form', { id: 'dispatch', onsubmit: async (e) => {
    e.preventDefault();
    const body = { prompt: prompt.value, agent: agent.value, permissionMode: mode.value };
    if (model.value.trim()) body.model = model.value.trim();
    if (cwd.value.trim()) body.cwd = cwd.value.trim();
    const t = all.find((x) => x.id === where.value);
    try {
      const task = await api('POST', '/api/v1/ai-tasks', { body, target: t.id });
      toast(`Dispatched ${task.taskId.slice(0, 8)}`);
      prompt.value = '';
      open(task, t);
      await loadList();
    } catch (err) { toast(`Not dispatched: ${err.message}`, 'error'); }
  } }, field('Where', where), field('Agent', agent), field('Permissions', mode), field('Model', model), field('Directory', cwd), field('Prompt', prompt),
  el('button', { type: 'submit' }, 'Dispatch'));

  header.append(el('button', { type: 'button', onclick: () => loadList() }, 'Refresh'));
  root.append(el('div', { class: 'split' }, el('div', {}, section('Dispatch', form), section('Tasks', listBox)), section('Task', detail)));
  await loadList();
  ctx.ready();
  const timer = setInterval(() => loadList().catch(() => {}), 10000);
  return () => { clearInterval(timer); if (following) following.abort(); };
}
