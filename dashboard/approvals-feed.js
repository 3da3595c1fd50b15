// The approval inbox, live: one event stream (/api/v1/approvals/stream) per page, shared by the
// navigation's count badge and the Approvals view. It keeps the requests and targets the daemon
// gathered, resumes after a cut with Last-Event-ID (backing off), and stops when the session is
// gone. Listeners get called after each change, once the first snapshot is complete.
import { stream, onLoggedOut } from './api.js';

const items = new Map();
const targets = new Map();
const listeners = new Set();
let staging = null;
let synced = false;
let started = false;
let stopped = false;
let lastId = null;
const controller = new AbortController();

function notify() {
  if (!synced) return;
  for (const fn of listeners) {
    try { fn(); } catch (err) { console.warn('approvals listener', err); }
  }
}

function apply(change) {
  if (!change || typeof change !== 'object') return;
  switch (change.type) {
    case 'reset':
      staging = { items: new Map(), targets: new Map() };
      return;
    case 'synced':
      if (staging) {
        items.clear();
        targets.clear();
        for (const [k, v] of staging.items) items.set(k, v);
        for (const [k, v] of staging.targets) targets.set(k, v);
        staging = null;
      }
      synced = true;
      break;
    case 'approval':
      if (change.approval && typeof change.approval.id === 'string') (staging ? staging.items : items).set(change.approval.id, change.approval);
      break;
    case 'removed':
      items.delete(change.id);
      break;
    case 'target':
      if (change.target && typeof change.target.id === 'string') (staging ? staging.targets : targets).set(change.target.id, change.target);
      break;
    case 'targetRemoved':
      targets.delete(change.id);
      for (const [id, item] of items) if (item.target === change.id) items.delete(id);
      break;
    default:
      return;
  }
  if (!staging) notify();
}

async function run() {
  let wait = 1000;
  while (!stopped) {
    try {
      await stream('GET', '/api/v1/approvals/stream', {
        signal: controller.signal,
        lastEventId: lastId,
        onEvent: (event) => {
          if (event.id) lastId = event.id;
          apply(event.json);
          wait = 1000;
        },
      });
    } catch (err) {
      if (stopped || (err && err.status === 401)) return;
    }
    if (stopped) return;
    staging = null;
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 15000);
  }
}

onLoggedOut(() => { stopped = true; controller.abort(); });

// Calls fn after every change (and at once when the inbox is already known); returns a function
// that stops calling it. The stream starts with the first listener.
export function subscribe(fn) {
  listeners.add(fn);
  if (!started) { started = true; run(); }
  if (synced) fn();
  return () => listeners.delete(fn);
}

export function snapshot() {
  return { items: [...items.values()], targets: [...targets.values()], synced };
}

export function pendingCount() {
  let n = 0;
  for (const item of items.values()) if (item.state === 'pending') n++;
  return n;
}
