// The shell: a hash router that loads one view module at a time. Each view's render(root, ctx)
// returns a cleanup function that stops its streams and timers when the view is left.
import { api, onLoggedOut, get } from './api.js';
import { el, clear, toast } from './dom.js';
import { subscribe, pendingCount } from './approvals-feed.js';

const VIEWS = ['overview', 'peers', 'context', 'locks', 'messages', 'tasks', 'approvals', 'terminal'];
const root = document.getElementById('view');
let cleanup = null;
let generation = 0;
let loggedOut = false;

function showLoggedOut() {
  if (loggedOut) return;
  loggedOut = true;
  generation++; // whatever view is still loading is stale now
  if (cleanup) { cleanup(); cleanup = null; }
  document.body.classList.add('logged-out');
  clear(root).append(el('section', { class: 'card', id: 'logged-out' },
    el('h2', {}, 'Not logged in'),
    el('p', {}, 'This browser has no dashboard session (it expired, you logged out, or the daemon restarted).'),
    el('p', {}, 'Run ', el('code', {}, 'loopsy dashboard'), ' on this machine to open a new one.')));
}
onLoggedOut(showLoggedOut);

async function route() {
  if (loggedOut) return;
  const name = (location.hash.replace(/^#\/?/, '') || 'overview').split('?')[0];
  const view = VIEWS.includes(name) ? name : 'overview';
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('active', link.dataset.view === view);
  if (cleanup) { cleanup(); cleanup = null; }
  const mine = ++generation;
  document.body.dataset.view = view;
  delete root.dataset.ready;
  const started = performance.now();
  try {
    const module = await import(`./views/${view}.js`);
    if (mine !== generation) return;
    // The view draws into its own container: if it goes stale (another view, logged out) while
    // it loads, what it still draws lands nowhere.
    const container = el('div', { class: 'view-body' });
    root.replaceChildren(container);
    const ctx = {
      // For the browser tests: when the view showed its data, since the route began and since
      // the page began loading.
      ready() {
        if (mine !== generation) return;
        root.dataset.paintMs = String(Math.round(performance.now() - started));
        root.dataset.readyAt = String(Math.round(performance.now()));
        root.dataset.ready = view;
      },
      stale: () => mine !== generation,
    };
    const stop = (await module.render(container, ctx)) || null;
    if (mine === generation) cleanup = stop;
    else if (stop) stop();
  } catch (err) {
    if (mine !== generation || loggedOut) return;
    clear(root).append(el('section', { class: 'card error' }, el('h2', {}, 'Something went wrong'), el('p', {}, String(err.message || err))));
  }
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/api/v1/dashboard/logout'); } catch (err) { toast(err.message, 'error'); }
  showLoggedOut();
});

// The count of requests waiting for a human, on every view.
const approvalsBadge = document.getElementById('approvals-badge');
subscribe(() => {
  const n = pendingCount();
  approvalsBadge.textContent = String(n);
  approvalsBadge.dataset.count = String(n);
  approvalsBadge.hidden = n === 0;
});

window.addEventListener('hashchange', route);
get('/api/v1/identity').then((me) => {
  document.getElementById('whoami').textContent = me.hostname;
  document.title = `loopsy — ${me.hostname}`;
}).catch(() => {});
route();
