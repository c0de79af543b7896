// Shared client state: queen profiles and the merged session list (live + stored).

import { get } from "./api.js";

const listeners = new Set();

export const store = {
  queens: [],
  queensById: new Map(),
  queensError: null,
  sessions: [],          // merged, newest activity first
  sessionsError: null,
  sessionsLoaded: false,
  activeId: null,
  version: "",
};

export function subscribe(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function notify() { for (const fn of listeners) { try { fn(store); } catch (err) { console.warn(err); } } }

export function queenOf(id) {
  return store.queensById.get(id) || null;
}

export async function loadQueens() {
  try {
    const data = await get("/api/queen/profiles");
    store.queens = data.queens || [];
    store.queensById = new Map(store.queens.map((q) => [q.id, q]));
    store.queensError = null;
  } catch (err) {
    store.queensError = err.message;
  }
  notify();
}

let inflight = null;
let again = false;

/** Re-reads GET /api/sessions and /api/sessions/history and merges them by session id. */
export function refreshSessions() {
  if (inflight) { again = true; return inflight; }
  inflight = (async () => {
    try {
      const [live, history] = await Promise.all([get("/api/sessions"), get("/api/sessions/history")]);
      const byId = new Map();
      for (const item of history.sessions || []) {
        byId.set(item.session_id, { ...item, live: Boolean(item.live) });
      }
      for (const s of live.sessions || []) {
        const prev = byId.get(s.session_id) || {};
        byId.set(s.session_id, {
          ...prev, ...s, live: true, cold: false,
          last_active_at: prev.last_active_at || s.loaded_at,
          created_at: prev.created_at || s.loaded_at,
          agent_name: prev.agent_name || s.colony_name,
        });
      }
      store.sessions = [...byId.values()].sort((a, b) => (b.last_active_at || 0) - (a.last_active_at || 0));
      store.sessionsError = null;
    } catch (err) {
      store.sessionsError = err.message;
    } finally {
      store.sessionsLoaded = true;
      inflight = null;
    }
    notify();
    if (again) { again = false; return refreshSessions(); }
    return store.sessions;
  })();
  return inflight;
}

export function sessionEntry(id) {
  return store.sessions.find((s) => s.session_id === id) || null;
}

export function navigate(path) {
  const target = "#" + path;
  if (location.hash !== target) location.hash = target;
  else window.dispatchEvent(new HashChangeEvent("hashchange"));
}
