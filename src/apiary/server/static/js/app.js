// apiary web UI entry point: boot, hash routing (#/ and #/s/<session id>), the start page.

import { get, post, setTokenPrompt } from "./api.js";
import { ChatView } from "./chat.js";
import { tokenDialog, toast } from "./dialogs.js";
import { avatar, clear, h, icon } from "./dom.js";
import { pickQueenAndStart, Sidebar, startSession } from "./sidebar.js";
import { loadQueens, navigate, queenOf, refreshSessions, store, subscribe } from "./store.js";

const appEl = document.getElementById("app");
const mainEl = document.getElementById("main");
const colonyEl = document.getElementById("colony");

const app = {
  view: null,
  setColonyVisible(visible) {
    colonyEl.hidden = !visible;
    appEl.classList.toggle("with-colony", visible);
  },
};

setTokenPrompt((rejected) => tokenDialog(rejected));

// ---------------------------------------------------------------- start page

class HomeView {
  constructor(main) { this.main = main; }

  mount() {
    clear(this.main);
    this.textarea = h("textarea", { id: "start-input", rows: 3, placeholder: "What do you want to work on? The right queen picks it up.", "aria-label": "First message" });
    this.send = h("button", { class: "btn primary small", type: "button", id: "start-send" }, icon("send"), "Start");
    this.error = h("div", { class: "composer-error", role: "alert", hidden: true });
    const composer = h("div", { class: "composer" }, this.textarea,
      h("div", { class: "bar" }, h("span", { class: "hint" }, h("kbd", {}, "Enter"), " to start · ", h("kbd", {}, "Shift"), "+", h("kbd", {}, "Enter"), " for a new line"), h("span", { class: "grow" }), this.send));
    this.grid = h("div", { class: "queen-grid", id: "queen-grid" });
    this.main.append(h("div", { class: "empty", id: "home" },
      h("div", { class: "logo" }, icon("logo")),
      h("h1", {}, "Talk to a queen, run a colony"),
      h("p", { class: "lead" }, "Each queen is an agent with her own expertise. Chat with one, then spawn a colony of workers to get the job done."),
      h("div", { class: "start-box" }, this.error, composer),
      this.grid));
    this.textarea.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.start(); }
    });
    this.send.addEventListener("click", () => this.start());
    this.unsub = subscribe(() => this.renderQueens());
    this.renderQueens();
    setTimeout(() => this.textarea.focus(), 0);
  }

  destroy() { this.unsub?.(); }

  renderQueens() {
    clear(this.grid);
    if (store.queensError) {
      this.grid.append(h("div", { class: "composer-error", style: { gridColumn: "1 / -1" } }, store.queensError));
      return;
    }
    for (const q of store.queens) {
      this.grid.append(h("button", {
        class: "queen-card", type: "button", dataset: { queen: q.id }, title: `Start a session with ${q.name}`,
        onclick: () => this.start(q),
      }, avatar(q.name, q.id, "lg"), h("span", { class: "qn" }, q.name), h("span", { class: "qt" }, q.title)));
    }
  }

  async start(queen) {
    const text = this.textarea.value.trim();
    this.error.hidden = true;
    this.send.disabled = true;
    try {
      let chosen = queen;
      if (!chosen && text) {
        const res = await post("/api/messages/classify", { message: text });
        chosen = queenOf(res.queen_id) || { id: res.queen_id };
      }
      if (!chosen) {
        await pickQueenAndStart();
        return;
      }
      await startSession(chosen, text || undefined);
    } catch (err) {
      this.error.textContent = err.message;
      this.error.hidden = false;
    } finally {
      this.send.disabled = false;
    }
  }
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const m = /^#\/s\/([^/?#]+)/.exec(location.hash);
  return m ? { name: "session", id: decodeURIComponent(m[1]) } : { name: "home" };
}

function route() {
  const r = parseRoute();
  if (r.name === "session" && app.view instanceof ChatView && app.view.id === r.id) return;
  app.view?.destroy();
  app.setColonyVisible(false);
  if (r.name === "session") {
    store.activeId = r.id;
    app.view = new ChatView(r.id, { main: mainEl, colonyHost: colonyEl, app });
    document.title = "apiary · session";
  } else {
    store.activeId = null;
    app.view = new HomeView(mainEl);
    document.title = "apiary";
  }
  app.view.mount();
  sidebar.render();
}

window.addEventListener("hashchange", route);
window.addEventListener("apiary:session-ended", (e) => {
  if (app.view instanceof ChatView && app.view.id === e.detail) app.view.markEnded();
});
window.addEventListener("apiary:session-activate", (e) => {
  if (app.view instanceof ChatView && app.view.id === e.detail && app.view.ended) app.view.resumeEnded();
});
window.addEventListener("unhandledrejection", (e) => {
  const reason = e.reason;
  if (reason && reason.name === "AbortError") { e.preventDefault(); return; }
  console.warn("unhandled", reason);
  e.preventDefault();
  if (reason && reason.message) toast(reason.message, "err");
});
document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === "n" || e.key === "N")) { e.preventDefault(); pickQueenAndStart(); }
  if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName)) {
    const input = document.getElementById("composer-input") || document.getElementById("start-input");
    if (input && !input.disabled) { e.preventDefault(); input.focus(); }
  }
});

const sidebar = new Sidebar(document.getElementById("sidebar"));

async function boot() {
  get("/api/health").then((hz) => { store.version = hz.version || ""; sidebar.render(); }).catch(() => {});
  await loadQueens();
  await refreshSessions();
  appEl.dataset.state = "ready";
  route();
  // Keep relative times and live flags fresh without hammering the server.
  setInterval(() => { if (document.visibilityState === "visible") refreshSessions(); }, 30000);
}

boot();
