// Building DOM from data. Every string from a daemon or a peer becomes a text node or a
// property value, never markup: there is no HTML parsing of data anywhere in the dashboard.

// el('tr', {class: 'x', onclick: fn}, child, 'text', [more]) → an element.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = String(value);
    else if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name === 'value' || name === 'checked' || name === 'disabled' || name === 'selected') node[name] = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

// A table with a header row; rows are arrays of cells (strings or nodes) or <tr> elements.
export function table(headers, rows, empty = 'Nothing here.') {
  const body = el('tbody', {}, rows.map((row) => (row instanceof Node ? row : el('tr', {}, row.map((c) => el('td', {}, c))))));
  if (rows.length === 0) body.append(el('tr', {}, el('td', { colspan: headers.length, class: 'muted' }, empty)));
  return el('table', {}, el('thead', {}, el('tr', {}, headers.map((h) => el('th', {}, h)))), body);
}

export function badge(text, kind = text) {
  return el('span', { class: `badge badge-${String(kind).replace(/[^a-z_]/g, '')}` }, text);
}

export function section(title, ...children) {
  return el('section', { class: 'card' }, el('h2', {}, title), ...children);
}

export function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(ms).toLocaleString();
}

export function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

// A <select> of dashboard targets ({id, label, hostname, online, reachable}).
export function targetSelect(targets, { name = 'target', filter = () => true, selected } = {}) {
  const options = targets.filter(filter).map((t) =>
    el('option', { value: t.id, selected: t.id === selected, disabled: !t.reachable }, `${t.label}${t.kind === 'peer' ? ` — ${t.hostname}` : ''}${t.online ? '' : ' (offline)'}`));
  return el('select', { name }, options);
}

let toastTimer;
export function toast(message, kind = 'info') {
  const box = document.getElementById('toast');
  box.className = `show ${kind}`;
  box.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.className = ''; }, 4000);
}

export function field(label, input) {
  return el('label', { class: 'field' }, el('span', {}, label), input);
}
