// Left sidebar: new session, queens, sessions (live and stored), end / delete.

import { del, enc, post } from "./api.js";
import { confirmDialog, queenPickerDialog, toast } from "./dialogs.js";
import { avatar, clear, h, icon, relTime } from "./dom.js";
import { navigate, queenOf, refreshSessions, store, subscribe } from "./store.js";

export async function startSession(queen, initialPrompt) {
  const body = initialPrompt ? { initial_prompt: initialPrompt } : {};
  const res = await post(`/api/queen/${enc(queen.id)}/session/new`, body);
  await refreshSessions();
  navigate(`/s/${res.session_id}`);
  return res;
}

export async function pickQueenAndStart() {
  if (!store.queens.length) { toast(store.queensError || "No queen profiles are available.", "err"); return; }
  const queen = await queenPickerDialog(store.queens);
  if (!queen) return;
  try { await startSession(queen); } catch (err) { toast(err.message, "err"); }
}

export class Sidebar {
  constructor(root) {
    this.root = root;
    this.queensOpen = true;
    this.build();
    subscribe(() => this.render());
  }

  build() {
    clear(this.root);
    this.queensBox = h("div", { class: "queen-list" });
    this.queensDetails = h("details", { class: "side-section", open: true },
      h("summary", {}, icon("chev", "chev"), "Queens"), this.queensBox);
    this.sessionsBox = h("div", {});
    this.footer = h("div", { class: "side-footer" });
    append(this.root, [
      h("div", { class: "brand" }, icon("logo"), "apiary", h("span", { class: "version", id: "version" })),
      h("div", { class: "new-session" },
        h("button", { class: "btn primary", type: "button", id: "new-session", onclick: () => pickQueenAndStart(), title: "New session (Alt+N)" },
          icon("plus"), "New session")),
      h("div", { class: "sessions-scroll" }, this.queensDetails,
        h("div", { class: "side-section" }, this.sessionsBox)),
      this.footer,
    ]);
    this.render();
  }

  render() {
    this.renderQueens();
    this.renderSessions();
    const v = document.getElementById("version");
    if (v) v.textContent = store.version ? "v" + store.version : "";
    clear(this.footer);
    append(this.footer, [
      h("span", { class: "grow" }, h("kbd", {}, "Enter"), " send · ", h("kbd", {}, "Shift"), "+", h("kbd", {}, "Enter"), " newline"),
    ]);
  }

  renderQueens() {
    clear(this.queensBox);
    if (store.queensError) {
      this.queensBox.append(h("div", { class: "side-error", role: "alert" }, "Queens: " + store.queensError));
      return;
    }
    for (const q of store.queens) {
      this.queensBox.append(h("button", {
        class: "queen-item", type: "button", title: `New session with ${q.name}, ${q.title}`, dataset: { queen: q.id },
        onclick: async () => { try { await startSession(q); } catch (err) { toast(err.message, "err"); } },
      }, avatar(q.name, q.id), h("span", { class: "qname" }, q.name)));
    }
  }

  renderSessions() {
    clear(this.sessionsBox);
    const list = store.sessions;
    this.sessionsBox.append(h("div", { class: "side-heading" }, "Sessions", h("span", { class: "count" }, list.length ? String(list.length) : "")));
    if (store.sessionsError) {
      this.sessionsBox.append(h("div", { class: "side-error", role: "alert" }, store.sessionsError,
        " ", h("button", { class: "btn small", type: "button", onclick: () => refreshSessions() }, "Retry")));
    }
    if (!list.length) {
      if (store.sessionsLoaded && !store.sessionsError) {
        this.sessionsBox.append(h("div", { class: "side-empty" }, "No sessions yet. Pick a queen above to start one."));
      }
      return;
    }
    const ul = h("ul", { class: "session-list", id: "session-list" });
    for (const s of list) ul.append(this.sessionItem(s));
    this.sessionsBox.append(ul);
  }

  sessionItem(s) {
    const queen = queenOf(s.queen_id);
    // A live session with has_worker is a colony; a stored one with agent_name spawned that colony.
    const colony = s.has_worker ? (s.colony_name || s.agent_name) : null;
    const spawned = !s.has_worker && (s.agent_name || s.spawned_colony_name);
    const title = colony ? colony : (queen ? queen.name : (s.queen_name || "Session"));
    const sub = s.last_message || (queen ? queen.title : "No messages yet");
    const active = store.activeId === s.session_id;
    const tags = [];
    if (s.live) tags.push(h("span", { class: "live-dot", title: "Live" }));
    if (colony) tags.push(h("span", { class: "tag accent", title: `Colony session (${s.queen_name || "queen"})` }, "colony"));
    else if (spawned) tags.push(h("span", { class: "tag", title: `Spawned the colony ${spawned}` }, "spawned"));
    if (s.colony_spawned) tags.push(h("span", { class: "tag warn" }, "locked"));
    const actions = h("div", { class: "actions" });
    if (s.live) {
      actions.append(h("button", {
        class: "btn ghost icon small", type: "button", title: "End session (keeps its history)", "aria-label": "End session",
        onclick: (e) => { e.preventDefault(); e.stopPropagation(); this.endSession(s); },
      }, icon("end")));
    }
    actions.append(h("button", {
      class: "btn ghost icon small danger", type: "button", title: "Delete session", "aria-label": "Delete session",
      onclick: (e) => { e.preventDefault(); e.stopPropagation(); this.deleteSession(s, title); },
    }, icon("trash")));
    return h("li", { class: "session-item" + (active ? " active" : ""), dataset: { sessionId: s.session_id } },
      h("a", {
        class: "session-link", href: `#/s/${s.session_id}`, "aria-current": active ? "page" : false,
        onclick: () => { if (store.activeId === s.session_id) window.dispatchEvent(new CustomEvent("apiary:session-activate", { detail: s.session_id })); },
      },
        avatar(queen ? queen.name : title, s.queen_id || title),
        h("span", { class: "meta" },
          h("span", { class: "line1" }, h("span", { class: "title" }, title), tags,
            h("span", { class: "time" }, relTime(s.last_active_at || s.loaded_at || s.created_at))),
          h("span", { class: "line2" }, sub))),
      actions);
  }

  async endSession(s) {
    try {
      await del(`/api/sessions/${enc(s.session_id)}`);
      if (store.activeId === s.session_id) window.dispatchEvent(new CustomEvent("apiary:session-ended", { detail: s.session_id }));
      toast("Session ended. It stays in your history.");
    } catch (err) {
      toast(err.message, "err");
    }
    await refreshSessions();
  }

  async deleteSession(s, title) {
    const ok = await confirmDialog({
      title: "Delete session?",
      message: `The conversation with ${title} and its event history will be removed from this server. This cannot be undone.`,
      confirm: "Delete", danger: true,
    });
    if (!ok) return;
    try {
      await del(`/api/sessions/history/${enc(s.session_id)}`);
      toast("Session deleted.");
    } catch (err) {
      if (err.status === 404 && s.live) {
        // Live but never stored (e.g. a colony session): ending it is all there is to do.
        try { await del(`/api/sessions/${enc(s.session_id)}`); } catch (err2) { toast(err2.message, "err"); }
      } else {
        toast(err.message, "err");
      }
    }
    const wasActive = store.activeId === s.session_id;
    await refreshSessions();
    if (wasActive) navigate("/");
  }
}

function append(el, children) {
  for (const c of children) if (c) el.append(c);
}
