// The dashboard's only way to the daemon: its public API, with the session cookie the browser
// sends by itself. Requests that change something carry X-Loopsy-Dashboard: 1, which the
// daemon requires with a cookie (no other site can make a browser send it). A target other
// than 'local' goes through the daemon's proxy, which holds the credentials.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const listeners = new Set();
// Called with no argument when the daemon says the session is gone (401).
export function onLoggedOut(fn) { listeners.add(fn); }
function loggedOut() { for (const fn of listeners) fn(); }

export function url(path, target = 'local') {
  return target === 'local' ? path : `/api/v1/dashboard/proxy/${encodeURIComponent(target)}${path}`;
}

function errorMessage(data, res) {
  if (data && typeof data.error === 'string') return data.error;
  if (data && data.error && typeof data.error.message === 'string') return data.error.message;
  if (data && typeof data.message === 'string') return data.message;
  return `HTTP ${res.status}`;
}

export async function api(method, path, { body, target = 'local', signal } = {}) {
  const init = { method, headers: { 'X-Loopsy-Dashboard': '1' }, credentials: 'same-origin', signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path, target), init);
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (res.status === 401) loggedOut();
  if (!res.ok) throw new ApiError(res.status, errorMessage(data, res));
  return data;
}

export const get = (path, options) => api('GET', path, options);

// Opens an event stream (GET or POST) and calls onEvent({event, id, data}) for each event
// until the stream ends or `signal` aborts it; onOpen() once the daemon has answered (for a
// watch, from then on no change is missed). Resolves when the stream ends.
export async function stream(method, path, { body, target = 'local', signal, lastEventId, onEvent, onOpen }) {
  const headers = { 'X-Loopsy-Dashboard': '1', Accept: 'text/event-stream' };
  if (lastEventId) headers['Last-Event-ID'] = lastEventId;
  const init = { method, headers, credentials: 'same-origin', signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url(path, target), init);
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { data = null; }
    if (res.status === 401) loggedOut();
    throw new ApiError(res.status, errorMessage(data, res));
  }
  if (onOpen) onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseBlock(block);
      if (event) onEvent(event);
    }
  }
}

function parseBlock(block) {
  const event = { event: 'message', id: null, data: [] };
  let any = false;
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') { event.data.push(value); any = true; }
    else if (name === 'event') event.event = value;
    else if (name === 'id') event.id = value;
  }
  if (!any) return null;
  event.data = event.data.join('\n');
  try { event.json = JSON.parse(event.data); } catch { event.json = null; }
  return event;
}

let targetsCache = null;
// What the dashboard can address (this daemon, local sessions, registry peers).
export async function targets(refresh = false) {
  if (!targetsCache || refresh) targetsCache = (await get('/api/v1/dashboard/targets')).targets;
  return targetsCache;
}

// Keys as one encoded path segment (':' travels as %3A, as 1.0.21 expects).
export function contextPath(key) {
  return `/api/v1/context/${encodeURIComponent(key)}`;
}
