// The session view: header, banners, the conversation (history + live stream) and the composer.

import { ApiError, del, enc, get, post } from "./api.js";
import { ColonyPanel } from "./colony.js";
import { confirmDialog, toast } from "./dialogs.js";
import { avatar, clear, clockTime, debounce, h, icon, markdown, oneLine, pretty, shortId } from "./dom.js";
import { openColony, spawnDialog } from "./spawn.js";
import { SseStream } from "./sse.js";
import { navigate, queenOf, refreshSessions, sessionEntry, store } from "./store.js";

export const STREAM_TYPES = [
  "client_output_delta", "client_input_requested", "client_input_received", "tool_call_started", "tool_call_completed",
  "execution_started", "execution_completed", "execution_failed", "execution_paused", "execution_resumed",
  "node_loop_started", "node_loop_iteration", "node_loop_completed", "llm_turn_complete", "goal_progress",
  "goal_achieved", "node_stalled", "node_retry", "node_tool_doom_loop", "context_compacted", "worker_colony_loaded",
  "colony_created", "credentials_required", "subagent_report", "queen_phase_changed", "node_action_plan",
  "trigger_available", "trigger_activated", "trigger_deactivated", "trigger_fired", "trigger_removed", "trigger_updated",
  "custom", "escalation_requested", "colony_fork_marker",
];

const MAX_IMAGE_BYTES = 8 * 1024 * 1024;
const PHASE_LABEL = { independent: "Independent", incubating: "Incubating", working: "Working", reviewing: "Reviewing" };

function isQueen(ev) { return ev.stream_id === "queen"; }

export class ChatView {
  constructor(sessionId, { main, colonyHost, app }) {
    this.id = sessionId;
    this.main = main;
    this.colonyHost = colonyHost;
    this.app = app;
    this.session = null;
    this.lastId = 0;
    this.busy = false;
    this.locked = false;
    this.ended = false;
    this.replaying = false;
    this.turns = new Map();
    this.tools = new Map();
    this.userMsgs = new Map();
    this.iterDone = new Set();
    this.lastTurn = null;
    this.lastBlock = null;
    this.openQuestion = null;
    this.attachments = [];
    this.stream = null;
    this.destroyed = false;
    this.stopRequested = false;
    this.colony = null;
    this.colonyOpen = true;
    this.listeners = new Set();
    this.colonyCards = new Map();
    this.thumbKey = "apiary.thumbs." + sessionId;
    this.refreshSessionSoon = debounce(() => this.refreshSession(), 400);
    this.refreshSidebarSoon = debounce(() => refreshSessions(), 800);
  }

  // ------------------------------------------------------------------ lifecycle

  mount() {
    clear(this.main);
    this.header = h("header", { class: "chat-header" });
    this.banners = h("div", { class: "banners" });
    this.messages = h("div", { class: "messages", id: "messages", role: "log", "aria-live": "polite", "aria-relevant": "additions" });
    this.jump = h("button", { class: "btn small jump", type: "button", hidden: true, onclick: () => this.scrollToBottom(true) }, icon("down"), "New messages");
    this.scroller = h("div", { class: "scroller", id: "scroller" }, this.messages, this.jump);
    this.scroller.addEventListener("scroll", () => { if (this.nearBottom()) this.jump.hidden = true; });
    this.composerWrap = h("div", { class: "composer-wrap" });
    this.main.append(this.header, this.banners, this.scroller, this.composerWrap);
    this.renderHeader();
    this.buildComposer();
    this.messages.append(h("div", { class: "loading", id: "chat-loading" }, h("span", { class: "spinner" }), "Loading conversation…"));
    this.load();
  }

  destroy() {
    this.destroyed = true;
    this.stream?.close();
    this.colony?.destroy();
    this.colony = null;
    this.app.setColonyVisible(false);
    this.refreshSessionSoon.cancel();
  }

  async load() {
    let info;
    try {
      info = await this.fetchSession();
      if (this.destroyed) return;
      if (info.cold) {
        await this.reopen();
        info = await this.fetchSession();
      }
    } catch (err) {
      if (this.destroyed) return;
      this.showFatal(err);
      return;
    }
    if (this.destroyed) return;
    this.setSession(info);
    let hist;
    try {
      hist = await get(`/api/sessions/${enc(this.id)}/events/history?limit=2000`);
    } catch (err) {
      if (!this.destroyed) this.showFatal(err);
      return;
    }
    if (this.destroyed) return;
    document.getElementById("chat-loading")?.remove();
    if (hist.truncated) this.messages.append(h("div", { class: "history-cut" }, `Showing the latest ${hist.returned} of ${hist.total} events.`));
    this.replaying = true;
    for (const ev of hist.events || []) this.handle(ev);
    this.replaying = false;
    this.colony?.afterReplay();
    this.afterEvents();
    this.scrollToBottom(true);
    this.openStream();
    this.textarea.focus();
  }

  async fetchSession() {
    // 202 {loading: true} while a colony loads: wait for it.
    for (let i = 0; i < 240; i++) {
      const info = await get(`/api/sessions/${enc(this.id)}`);
      if (!info.loading) return info;
      this.setLoadingText("Loading the colony…");
      await new Promise((r) => setTimeout(r, 1000));
      if (this.destroyed) return info;
    }
    throw new ApiError(504, { error: "The colony is still loading. Try again in a moment." });
  }

  /** A stored (cold) session: bring it back with its own queen. */
  async reopen() {
    this.setLoadingText("Reopening the session…");
    const entry = sessionEntry(this.id);
    const queenId = entry && entry.queen_id;
    if (queenId) {
      await post(`/api/queen/${enc(queenId)}/session/select`, { session_id: this.id });
    } else {
      await post("/api/sessions", { queen_resume_from: this.id });
    }
    refreshSessions();
  }

  setLoadingText(text) {
    const el = document.getElementById("chat-loading");
    if (el) { clear(el); el.append(h("span", { class: "spinner" }), text); }
  }

  showFatal(err) {
    clear(this.messages);
    const notFound = err.status === 404;
    this.messages.append(h("div", { class: "error-state", role: "alert" },
      h("h2", {}, notFound ? "Session not found" : "Could not open this session"),
      h("div", { class: "msg-text" }, err.message),
      h("button", { class: "btn", type: "button", onclick: () => navigate("/") }, "Back to start")));
    this.setComposerEnabled(false, notFound ? "This session is not available." : "Not connected.");
  }

  openStream() {
    const url = `/api/sessions/${enc(this.id)}/events?types=${STREAM_TYPES.join(",")}`;
    let opened = false;
    this.stream = new SseStream(url, {
      lastId: this.lastId,
      onEvent: (ev) => this.handle(ev),
      onStatus: (s) => this.setConn(s),
      onOpen: () => {
        if (opened) { this.refreshSession(); this.refreshSidebarSoon(); }
        opened = true;
        this.clearBanner("ended");
      },
      onFatal: (status, body) => this.markEnded(body.error || `HTTP ${status}`),
    }).start();
  }

  /** The session was ended (here, in another tab, or on the server): offer to resume it. */
  markEnded(reason) {
    this.ended = true;
    this.busy = false;
    this.stream?.close();
    this.setConn("closed");
    this.showBanner("ended", "warn", [h("strong", {}, "This session has ended. "), reason ? reason + ". " : "", "Its history is kept; resume it to go on."],
      h("button", { class: "btn small primary", type: "button", id: "resume-session", onclick: () => this.resumeEnded() }, icon("play"), "Resume session"));
    this.afterEvents();
  }

  async resumeEnded() {
    if (this.resuming) return;
    this.resuming = true;
    try {
      await this.reopen();
      this.ended = false;
      this.clearBanner("ended");
      this.stream?.close();
      this.openStream();
      await this.refreshSession();
    } catch (err) {
      toast(err.message, "err");
    } finally {
      this.resuming = false;
    }
  }

  async refreshSession() {
    if (this.destroyed) return;
    try {
      const info = await get(`/api/sessions/${enc(this.id)}`);
      if (!this.destroyed && !info.cold && !info.loading) this.setSession(info);
    } catch { /* the stream reports problems */ }
  }

  setSession(info) {
    this.session = info;
    this.locked = Boolean(info.colony_spawned);
    this.renderHeader();
    this.renderLock();
    this.updateComposer();
    if (info.has_worker) {
      if (!this.colony) {
        this.colony = new ColonyPanel(this.colonyHost, this);
        this.colony.mount();
      } else {
        this.colony.update(info);
      }
      this.app.setColonyVisible(this.colonyOpen);
    } else if (this.colony) {
      this.colony.destroy();
      this.colony = null;
      this.app.setColonyVisible(false);
    }
  }

  // ------------------------------------------------------------------ header & banners

  queenName() {
    const s = this.session;
    const q = s && queenOf(s.queen_id);
    return (q && q.name) || (s && s.queen_name) || "The queen";
  }

  renderHeader() {
    clear(this.header);
    const s = this.session;
    const q = s && queenOf(s.queen_id);
    const name = this.queenName();
    const phase = s && s.queen_phase;
    this.connEl = this.connEl || h("span", { class: "conn connecting", id: "conn", title: "Event stream" }, h("span", { class: "dot" }), h("span", { class: "txt" }, "Connecting"));
    const copyId = h("button", {
      class: "btn ghost small", type: "button", title: "Copy session id", style: { padding: "0 4px", height: "20px", fontSize: "12px", color: "var(--text-3)" },
      onclick: async () => { try { await navigator.clipboard.writeText(this.id); toast("Session id copied."); } catch { toast(this.id); } },
    }, shortId(this.id));
    const tools = h("div", { class: "tools" }, this.connEl);
    if (s && !s.has_worker) {
      tools.append(h("button", { class: "btn small", type: "button", id: "spawn-colony", title: "Spawn a colony of workers from this conversation", onclick: () => this.openSpawn() }, icon("spawn"), "Spawn colony"));
    }
    if (s && s.has_worker) {
      tools.append(h("button", {
        class: "btn small", type: "button", id: "toggle-colony", "aria-pressed": String(this.colonyOpen),
        onclick: () => { this.colonyOpen = !this.colonyOpen; this.app.setColonyVisible(this.colonyOpen); this.renderHeader(); },
      }, icon("panel"), this.colonyOpen ? "Hide colony" : "Show colony"));
    }
    if (s) {
      tools.append(h("button", { class: "btn ghost icon small", type: "button", title: "End session", "aria-label": "End session", onclick: () => this.endSession() }, icon("end")));
    }
    this.header.append(
      avatar(name, s ? s.queen_id : this.id, "lg"),
      h("div", { class: "who" },
        h("div", { class: "name" }, h("span", { id: "queen-name" }, name),
          phase ? h("span", { class: "tag " + (phase === "working" ? "warn" : phase === "reviewing" ? "info" : ""), id: "phase", title: "Queen phase" }, PHASE_LABEL[phase] || phase) : null,
          s && s.colony_name ? h("span", { class: "tag accent" }, s.colony_name) : null),
        h("div", { class: "sub" }, q ? q.title + " · " : "", s && s.model ? `model ${s.model} · ` : "", copyId)),
      tools);
  }

  setConn(state) {
    if (!this.connEl) return;
    this.connEl.className = "conn " + state;
    const label = { connecting: "Connecting", open: "Live", reconnecting: "Reconnecting…", closed: "Offline" }[state] || state;
    this.connEl.querySelector(".txt").textContent = label;
    this.connEl.dataset.state = state;
  }

  showBanner(key, kind, content, action) {
    this.clearBanner(key);
    this.banners.append(h("div", { class: "banner " + kind, dataset: { banner: key }, role: kind === "err" ? "alert" : "status" },
      icon(kind === "info" ? "colony" : "alert"), h("div", { class: "grow" }, content), action || null));
  }

  clearBanner(key) { this.banners.querySelector(`[data-banner="${key}"]`)?.remove(); }

  renderLock() {
    if (!this.locked) { this.clearBanner("locked"); return; }
    const name = this.session && this.session.spawned_colony_name;
    const btn = h("button", { class: "btn small primary", type: "button", id: "compact-fork" }, icon("fork"), "Continue in a new session");
    btn.addEventListener("click", () => this.compactAndFork(btn));
    this.showBanner("locked", "warn", [h("strong", {}, "This conversation is locked. "),
      `It spawned the colony ${name ? "“" + name + "”" : ""}. Compact it into a new session with ${this.queenName()} to keep talking.`], btn);
  }

  async compactAndFork(btn) {
    btn.disabled = true;
    btn.textContent = "Compacting…";
    try {
      const res = await post(`/api/sessions/${enc(this.id)}/compact-and-fork`);
      toast(`New session started (${res.messages_compacted} messages compacted).`);
      await refreshSessions();
      navigate(`/s/${res.new_session_id}`);
    } catch (err) {
      btn.disabled = false;
      clear(btn);
      btn.append(icon("fork"), "Continue in a new session");
      this.showComposerError(err.message);
    }
  }

  async endSession() {
    const ok = await confirmDialog({ title: "End this session?", message: "The queen stops. The conversation stays in your history and can be resumed.", confirm: "End session" });
    if (!ok) return;
    try {
      await del(`/api/sessions/${enc(this.id)}`);
      await refreshSessions();
      navigate("/");
    } catch (err) {
      toast(err.message, "err");
    }
  }

  openSpawn() {
    spawnDialog(this);
  }

  // ------------------------------------------------------------------ events

  on(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  handle(ev) {
    if (!ev || this.destroyed) return;
    if (ev.type === "gap") return; // the stream reconnects from the last id by itself
    if (typeof ev.id === "number") {
      if (ev.id <= this.lastId) return;
      this.lastId = ev.id;
    }
    const stick = !this.replaying && this.nearBottom();
    try {
      this.dispatch(ev);
    } catch (err) {
      console.warn("could not render event", ev, err);
    }
    for (const fn of this.listeners) { try { fn(ev); } catch (err) { console.warn(err); } }
    this.colony?.onEvent(ev);
    if (!this.replaying) {
      this.afterEvents();
      if (stick) this.scrollToBottom(false);
      else this.jump.hidden = false;
    }
  }

  dispatch(ev) {
    const d = ev.data || {};
    const queen = isQueen(ev);
    switch (ev.type) {
      case "client_input_received":
        if (!queen) break;
        this.addUser(ev);
        this.busy = true;
        if (this.openQuestion) this.answerQuestion(d.content);
        break;
      case "client_output_delta":
        if (queen) this.addDelta(ev);
        break;
      case "tool_call_started":
        if (queen) this.addToolStart(ev);
        break;
      case "tool_call_completed":
        if (queen) this.addToolDone(ev);
        break;
      case "client_input_requested":
        if (!queen) break;
        this.onInputRequested(ev);
        if (!this.replaying) this.refreshSidebarSoon();
        break;
      case "node_loop_started":
      case "node_loop_iteration":
        if (queen) this.busy = true;
        break;
      case "node_loop_completed":
        if (queen) { this.busy = false; this.finishStreaming(); }
        break;
      case "llm_turn_complete":
        if (queen && d.iteration !== undefined) this.iterDone.add(d.iteration);
        break;
      case "execution_failed":
        if (queen) { this.busy = false; this.addNote(`The queen stopped: ${d.error || "execution failed"}`, "err"); }
        else this.addNote(`Worker run ${shortId(ev.execution_id)} ${d.cancelled ? "stopped" : "failed"}${d.error ? ": " + oneLine(d.error, 120) : ""}`, d.cancelled ? "" : "err");
        break;
      case "execution_started":
        if (!queen) this.addNote(`Worker run ${shortId(ev.execution_id)} started`);
        break;
      case "execution_completed":
        if (!queen) this.addNote(`Worker run ${shortId(ev.execution_id)} completed`);
        break;
      case "execution_paused":
        if (!queen) this.addNote(`Worker run ${shortId(ev.execution_id)} paused`);
        break;
      case "execution_resumed":
        this.addNote(`Worker run resumed from ${oneLine(d.checkpoint_id || "", 60)}`);
        break;
      case "queen_phase_changed":
        if (this.session) { this.session.queen_phase = d.phase; this.renderHeader(); }
        this.addNote(`Phase: ${PHASE_LABEL[d.phase] || d.phase}`);
        if (!this.replaying) this.refreshSessionSoon();
        break;
      case "context_compacted":
        this.addNote("Context compacted to stay within the model's window");
        break;
      case "node_retry":
        if (queen) this.addNote(`Retrying the model call (${d.retry_count}${d.max_retries > 0 ? "/" + d.max_retries : ""})${d.error ? ": " + oneLine(d.error, 100) : ""}`, "warn");
        break;
      case "node_stalled":
        if (queen) this.addNote(`Stalled: ${oneLine(d.reason || "", 120)}`, "warn");
        break;
      case "node_tool_doom_loop":
        if (queen) this.addNote(`Repeating tool calls detected: ${oneLine(d.description || "", 120)}`, "warn");
        break;
      case "credentials_required":
        this.addNote(`Credentials required: ${(d.required || []).map((r) => r.credential_name || r.env_var).join(", ") || "see the colony"}`, "warn");
        break;
      case "colony_created":
        this.colonyCard(d.colony_name, { colony_path: d.colony_path, compaction_status: d.compaction_status, task_ids: null, is_new: d.is_new });
        break;
      case "custom":
        if (d.name === "colony_compaction_status") this.updateCompaction(d);
        break;
      case "worker_colony_loaded":
        this.addNote(`Colony ${d.colony_name || d.colony_id || ""} loaded`);
        if (!this.replaying) this.refreshSessionSoon();
        break;
      case "subagent_report":
        this.addNote(`Worker ${d.worker_id ? shortId(d.worker_id) + " " : ""}reported ${d.status || ""}${d.summary ? ": " + oneLine(d.summary, 120) : ""}`, d.status === "failed" ? "err" : "");
        break;
      case "colony_fork_marker":
        this.addNote(`Continued from session ${shortId(d.parent_session_id)}${d.inherited_message_count ? ` (${d.inherited_message_count} messages summarized)` : ""}`);
        break;
      case "trigger_fired":
        this.addNote(`Trigger ${d.name || d.trigger_id} fired`);
        break;
      default:
        break;
    }
  }

  afterEvents() {
    this.updateComposer();
    this.updateTyping();
  }

  // ---- blocks

  appendBlock(el) {
    this.messages.querySelector(".empty-chat")?.remove();
    if (this.typingEl && this.typingEl.parentNode) this.messages.insertBefore(el, this.typingEl);
    else this.messages.append(el);
    this.lastBlock = el;
    return el;
  }

  addUser(ev) {
    const d = ev.data || {};
    const bubble = h("div", { class: "bubble" }, d.content || "");
    const body = h("div", { class: "body" });
    const thumbs = this.storedThumbs(ev.id);
    if (thumbs && thumbs.length) body.append(h("div", { class: "thumbs" }, thumbs.map((src) => h("img", { src, alt: "attached image" }))));
    if (d.content) body.append(bubble);
    if (d.image_count && !(thumbs && thumbs.length)) {
      body.append(h("div", { class: "attach-note" }, `${d.image_count} image${d.image_count > 1 ? "s" : ""} attached`));
    }
    body.append(h("div", { class: "time" }, clockTime(ev.timestamp)));
    const el = h("div", { class: "msg user", dataset: { eventId: ev.id } }, body);
    this.userMsgs.set(ev.id, el);
    this.finishStreaming();
    this.appendBlock(el);
  }

  turnKey(ev) {
    const d = ev.data || {};
    return [ev.stream_id, ev.node_id, ev.execution_id, d.iteration ?? "", d.inner_turn ?? ""].join("|");
  }

  addDelta(ev) {
    const d = ev.data || {};
    const key = this.turnKey(ev);
    let turn = this.turns.get(key);
    if (!turn) {
      const bubble = h("div", { class: "bubble" });
      const el = h("div", { class: "msg queen", dataset: { turn: key } },
        avatar(this.queenName(), this.session ? this.session.queen_id : ""),
        h("div", { class: "body" }, bubble));
      if (this.lastBlock && this.lastBlock.matches(".msg.queen, .steps, .card.question")) el.classList.add("cont");
      turn = { key, el, bubble, text: "", iteration: d.iteration, stopped: false };
      this.turns.set(key, turn);
      if (this.lastTurn && this.lastTurn !== turn) this.lastTurn.bubble.classList.remove("cursor");
      this.appendBlock(el);
    }
    const text = typeof d.snapshot === "string" ? d.snapshot : turn.text + (d.content || "");
    if (text !== turn.text) {
      turn.text = text;
      turn.bubble.innerHTML = markdown(text);
    }
    this.lastTurn = turn;
    if (!this.replaying) turn.bubble.classList.add("cursor");
  }

  finishStreaming() {
    if (this.lastTurn) this.lastTurn.bubble.classList.remove("cursor");
  }

  stepsContainer() {
    if (this.lastBlock && this.lastBlock.classList.contains("steps")) return this.lastBlock;
    return this.appendBlock(h("div", { class: "steps" }));
  }

  addToolStart(ev) {
    const d = ev.data || {};
    if (d.tool_name === "ask_user") return; // shown as a question card
    this.finishStreaming();
    const state = h("span", { class: "tstate" }, h("span", { class: "spinner" }), "running");
    const inputPre = h("pre", {}, pretty(d.tool_input ?? {}));
    const resultBox = h("div", {}, h("span", { class: "label" }, "Result"), h("pre", { class: "muted" }, "…"));
    const el = h("details", { class: "step running", dataset: { toolUseId: d.tool_use_id || "" } },
      h("summary", {}, icon("chev", "chev"), h("span", { class: "tname" }, d.tool_name || "tool"),
        h("span", { class: "tprev" }, oneLine(d.tool_input ?? {}, 80)), state),
      h("div", { class: "tbody" }, h("span", { class: "label" }, "Input"), inputPre, resultBox));
    this.tools.set(d.tool_use_id, { el, state, resultBox, started: Date.parse(ev.timestamp) || Date.now() });
    this.stepsContainer().append(el);
  }

  addToolDone(ev) {
    const d = ev.data || {};
    if (d.tool_name === "ask_user") return;
    let tool = this.tools.get(d.tool_use_id);
    if (!tool) { this.addToolStart({ ...ev, data: { ...d, tool_input: {} } }); tool = this.tools.get(d.tool_use_id); }
    if (!tool) return;
    const ms = (Date.parse(ev.timestamp) || Date.now()) - tool.started;
    tool.el.classList.remove("running");
    tool.el.classList.add(d.is_error ? "error" : "done");
    clear(tool.state);
    tool.state.append(icon(d.is_error ? "alert" : "check"), d.is_error ? "error" : (ms >= 0 && ms < 600000 ? (ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`) : "done"));
    clear(tool.resultBox);
    tool.resultBox.append(h("span", { class: "label" }, d.is_error ? "Error" : "Result"), h("pre", {}, pretty(d.result ?? "")));
  }

  onInputRequested(ev) {
    const d = ev.data || {};
    const questions = Array.isArray(d.questions) ? d.questions.filter((q) => q && (q.prompt || q.question)) : [];
    this.busy = false;
    // A turn that ends without llm_turn_complete and without a question was interrupted.
    if (!questions.length && this.lastTurn && !this.iterDone.has(this.lastTurn.iteration) && !this.lastTurn.stopped
        && this.lastBlock === this.lastTurn.el) {
      this.lastTurn.stopped = true;
      this.lastTurn.el.querySelector(".body").append(h("span", { class: "stopped" }, "Stopped"));
    }
    this.stopRequested = false;
    this.finishStreaming();
    if (questions.length) this.addQuestion(questions);
  }

  addQuestion(questions) {
    const card = h("div", { class: "card question", role: "group", "aria-label": "Question from the queen" },
      h("div", { class: "q-title" }, `${this.queenName()} asks`));
    const picks = new Map();
    const sendBtn = questions.length > 1 ? h("button", { class: "btn small primary", type: "button", disabled: true }, "Send answers") : null;
    for (const q of questions) {
      const prompt = q.prompt || q.question;
      card.append(h("div", { class: "q-prompt" }, prompt));
      const opts = h("div", { class: "options" });
      for (const option of q.options || []) {
        const label = typeof option === "string" ? option : (option.label || option.value || JSON.stringify(option));
        const btn = h("button", { class: "btn small", type: "button", dataset: { option: label } }, label);
        btn.addEventListener("click", () => {
          if (questions.length === 1) { this.sendText(label); return; }
          picks.set(q, label);
          for (const b of opts.querySelectorAll("button")) b.classList.toggle("chosen", b === btn);
          sendBtn.disabled = picks.size < questions.length;
        });
        opts.append(btn);
      }
      if ((q.options || []).length) card.append(opts);
    }
    if (sendBtn) {
      sendBtn.addEventListener("click", () => {
        this.sendText(questions.map((q) => `${q.prompt || q.question}: ${picks.get(q)}`).join("\n"));
      });
      card.append(h("div", { class: "row", style: { marginTop: "6px" } }, sendBtn));
    }
    card.append(h("div", { class: "q-hint" }, questions.some((q) => (q.options || []).length) ? "Pick an option, or type your own answer below." : "Type your answer below."));
    this.openQuestion = { card };
    this.appendBlock(card);
  }

  answerQuestion(content) {
    const { card } = this.openQuestion;
    this.openQuestion = null;
    card.classList.add("answered");
    for (const b of card.querySelectorAll("button")) {
      b.disabled = true;
      if (b.dataset.option && (b.dataset.option === content || String(content || "").includes(": " + b.dataset.option))) b.classList.add("chosen");
    }
    card.querySelector(".q-hint")?.remove();
  }

  addNote(text, kind = "") {
    this.finishStreaming();
    this.appendBlock(h("div", { class: "note " + kind }, text));
  }

  colonyCard(name, info) {
    if (!name) return null;
    let card = this.colonyCards.get(name);
    if (!card) {
      const status = h("span", { class: "tag", dataset: { role: "status" } });
      const details = h("dl", { class: "kv" });
      const open = h("button", { class: "btn small primary", type: "button", dataset: { colony: name } }, icon("colony"), "Open colony");
      const el = h("div", { class: "card system colony-card", dataset: { colony: name } },
        h("div", { class: "row" }, icon("colony"), h("strong", {}, `Colony “${name}”`), status),
        details, h("div", { class: "row" }, open));
      card = { el, status, details, open, info: {} };
      open.addEventListener("click", () => openColony(card.info.colony_path, open));
      this.colonyCards.set(name, card);
      this.finishStreaming();
      this.appendBlock(el);
    }
    const fresh = Object.fromEntries(Object.entries(info).filter(([, v]) => v !== null && v !== undefined));
    // Never step back from a final compaction status to in_progress (answers and events can cross).
    if (fresh.compaction_status === "in_progress" && card.info.compaction_status && card.info.compaction_status !== "in_progress") {
      delete fresh.compaction_status;
    }
    Object.assign(card.info, fresh);
    clear(card.details);
    const kv = [["Folder", card.info.colony_path]];
    if (Array.isArray(card.info.task_ids)) kv.push(["Tasks", `${card.info.task_ids.length} queued`]);
    if (card.info.is_new !== undefined) kv.push(["New", card.info.is_new ? "yes" : "no (updated)"]);
    for (const [k, v] of kv) if (v !== undefined) card.details.append(h("dt", {}, k), h("dd", {}, String(v)));
    this.renderCompactionTag(card.status, card.info.compaction_status);
    card.open.disabled = !card.info.colony_path;
    return card;
  }

  renderCompactionTag(tag, status) {
    const text = { in_progress: "compacting transcript…", done: "ready", skipped: "ready", failed: "compaction failed (raw transcript kept)" }[status] || status || "";
    tag.textContent = text;
    tag.className = "tag " + ({ in_progress: "warn", done: "ok", skipped: "ok", failed: "err" }[status] || "");
    tag.dataset.status = status || "";
  }

  updateCompaction(d) {
    const card = this.colonyCard(d.colony_name, { compaction_status: d.status });
    if (card && d.queen_session_id) card.info.queen_session_id = d.queen_session_id;
  }

  updateTyping() {
    const showing = this.busy && !(this.lastTurn && this.lastBlock === this.lastTurn.el);
    if (showing) {
      if (!this.typingEl) {
        this.typingEl = h("div", { class: "msg queen typing-row", "aria-label": `${this.queenName()} is working` },
          avatar(this.queenName(), this.session ? this.session.queen_id : ""),
          h("div", { class: "typing" }, h("span"), h("span"), h("span")));
      }
      if (this.messages.lastElementChild !== this.typingEl) this.messages.append(this.typingEl);
    } else if (this.typingEl) {
      this.typingEl.remove();
    }
    if (!this.busy) this.finishStreaming();
    if (!this.busy && !this.messages.querySelector(".msg, .note, .card, .steps") && this.session && !this.messages.querySelector(".empty-chat")) {
      this.messages.append(h("div", { class: "empty-chat" }, avatar(this.queenName(), this.session.queen_id, "xl"),
        h("div", { class: "t" }, `Start the conversation with ${this.queenName()}`),
        h("div", {}, "Ask a question, share an image, or describe work for a colony.")));
    }
  }

  // ------------------------------------------------------------------ composer

  buildComposer() {
    this.textarea = h("textarea", { id: "composer-input", rows: 1, placeholder: "Message the queen…", "aria-label": "Message", spellcheck: "true" });
    this.fileInput = h("input", { type: "file", accept: "image/*", multiple: true, hidden: true, id: "attach-input" });
    this.attachBtn = h("button", { class: "btn ghost icon small", type: "button", title: "Attach images", "aria-label": "Attach images", id: "attach" }, icon("clip"));
    this.sendBtn = h("button", { class: "btn primary small", type: "button", id: "send", "aria-label": "Send" }, icon("send"), "Send");
    this.stopBtn = h("button", { class: "btn small danger", type: "button", id: "stop", hidden: true, title: "Stop the queen's current turn" }, icon("stop"), "Stop");
    this.attachRow = h("div", { class: "attachments" });
    this.hint = h("span", { class: "hint" });
    this.errorBox = h("div", { class: "composer-error", role: "alert", hidden: true, id: "composer-error" });
    this.composer = h("div", { class: "composer" }, this.attachRow, this.textarea,
      h("div", { class: "bar" }, this.attachBtn, this.fileInput, this.hint, h("span", { class: "grow" }), this.stopBtn, this.sendBtn));
    this.composerWrap.append(this.errorBox, this.composer);

    this.textarea.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
        e.preventDefault();
        this.send();
      } else if (e.key === "Escape" && this.busy) {
        e.preventDefault();
        this.stop();
      }
    });
    this.textarea.addEventListener("input", () => this.autosize());
    this.textarea.addEventListener("paste", (e) => {
      const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
      if (files.length) { e.preventDefault(); this.addFiles(files); }
    });
    this.composer.addEventListener("dragover", (e) => { if (this.imagesAllowed()) { e.preventDefault(); this.composer.classList.add("dragging"); } });
    this.composer.addEventListener("dragleave", () => this.composer.classList.remove("dragging"));
    this.composer.addEventListener("drop", (e) => {
      this.composer.classList.remove("dragging");
      const files = [...(e.dataTransfer?.files || [])].filter((f) => f.type.startsWith("image/"));
      if (files.length) { e.preventDefault(); this.addFiles(files); }
    });
    this.attachBtn.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => { this.addFiles([...this.fileInput.files]); this.fileInput.value = ""; });
    this.sendBtn.addEventListener("click", () => this.send());
    this.stopBtn.addEventListener("click", () => this.stop());
    this.updateComposer();
  }

  autosize() {
    this.textarea.style.height = "auto";
    this.textarea.style.height = Math.min(this.textarea.scrollHeight, 240) + "px";
  }

  imagesAllowed() { return Boolean(this.session && this.session.queen_supports_images); }

  setComposerEnabled(enabled, placeholder) {
    this.textarea.disabled = !enabled;
    this.sendBtn.disabled = !enabled;
    this.attachBtn.disabled = !enabled;
    this.composer.classList.toggle("disabled", !enabled);
    this.textarea.placeholder = placeholder;
  }

  updateComposer() {
    if (!this.textarea) return;
    const name = this.queenName();
    const ready = Boolean(this.session) && !this.ended;
    this.attachBtn.hidden = !this.imagesAllowed();
    this.stopBtn.hidden = !(this.busy && ready && !this.locked);
    if (!ready) this.setComposerEnabled(false, this.ended ? "This session is not running." : "Connecting…");
    else if (this.locked) this.setComposerEnabled(false, "This conversation is locked: continue in a new session.");
    else if (this.busy) this.setComposerEnabled(false, `${name} is working… (Esc or Stop to interrupt)`);
    else this.setComposerEnabled(true, this.openQuestion ? `Answer ${name}…` : `Message ${name}…`);
    this.hint.textContent = this.busy && ready ? `${name} is working…` : "";
    this.composer.dataset.state = !ready ? "offline" : this.locked ? "locked" : this.busy ? "busy" : "ready";
    if (!this.textarea.disabled && !this.replaying && document.activeElement === document.body) this.textarea.focus();
  }

  showComposerError(message) {
    clear(this.errorBox);
    this.errorBox.append(icon("alert"), h("span", { class: "grow" }, message),
      h("button", { class: "btn ghost icon small", type: "button", "aria-label": "Dismiss", onclick: () => { this.errorBox.hidden = true; } }, icon("x")));
    this.errorBox.hidden = false;
  }

  async addFiles(files) {
    if (!this.imagesAllowed()) { this.showComposerError("This session's model does not accept images."); return; }
    for (const file of files) {
      if (!file.type.startsWith("image/")) continue;
      if (file.size > MAX_IMAGE_BYTES) { this.showComposerError(`${file.name} is larger than 8 MB.`); continue; }
      const dataUrl = await new Promise((resolve, reject) => {
        const r = new FileReader();
        r.onload = () => resolve(r.result);
        r.onerror = () => reject(r.error);
        r.readAsDataURL(file);
      }).catch(() => null);
      if (!dataUrl) continue;
      const thumb = await makeThumb(dataUrl);
      this.attachments.push({ name: file.name, dataUrl, thumb });
    }
    this.renderAttachments();
    this.textarea.focus();
  }

  renderAttachments() {
    clear(this.attachRow);
    this.attachments.forEach((a, i) => {
      this.attachRow.append(h("div", { class: "attachment" }, h("img", { src: a.thumb || a.dataUrl, alt: a.name, title: a.name }),
        h("button", { type: "button", "aria-label": `Remove ${a.name}`, onclick: () => { this.attachments.splice(i, 1); this.renderAttachments(); } }, icon("x"))));
    });
  }

  send() {
    const text = this.textarea.value;
    if (!text.trim() && !this.attachments.length) return;
    this.sendText(text, this.attachments.slice());
  }

  async sendText(text, attachments = []) {
    if (this.busy || this.locked || !this.session || this.ended) return;
    this.errorBox.hidden = true;
    const savedText = this.textarea.value;
    const savedAttachments = this.attachments;
    this.textarea.value = "";
    this.autosize();
    this.attachments = [];
    this.renderAttachments();
    this.busy = true;
    this.afterEvents();
    const body = { message: text };
    if (attachments.length) body.images = attachments.map((a) => ({ type: "image_url", image_url: { url: a.dataUrl } }));
    try {
      const res = await post(`/api/sessions/${enc(this.id)}/chat`, body);
      if (attachments.length && typeof res.after_seq === "number") this.rememberThumbs(res.after_seq, attachments.map((a) => a.thumb || a.dataUrl));
      this.refreshSidebarSoon();
    } catch (err) {
      this.busy = false;
      if (!this.textarea.value) this.textarea.value = savedText || text;
      this.attachments = savedAttachments.length ? savedAttachments : attachments;
      this.renderAttachments();
      this.autosize();
      if (err.code === "session_locked") {
        this.locked = true;
        if (this.session) { this.session.colony_spawned = true; this.session.spawned_colony_name = err.body.spawned_colony_name; }
        this.renderLock();
      }
      this.showComposerError(err.message);
      this.afterEvents();
    }
  }

  async stop() {
    this.stopRequested = true;
    this.stopBtn.disabled = true;
    try {
      await post(`/api/sessions/${enc(this.id)}/cancel-queen`);
    } catch (err) {
      this.showComposerError(err.message);
    } finally {
      this.stopBtn.disabled = false;
    }
  }

  // ---- image thumbnails survive a reload (small JPEGs in sessionStorage)

  storedThumbs(eventId) {
    if (this.pendingThumbs && this.pendingThumbs.has(eventId)) return this.pendingThumbs.get(eventId);
    try { return (JSON.parse(sessionStorage.getItem(this.thumbKey) || "{}"))[eventId] || null; } catch { return null; }
  }

  rememberThumbs(eventId, thumbs) {
    this.pendingThumbs = this.pendingThumbs || new Map();
    this.pendingThumbs.set(eventId, thumbs);
    try {
      const all = JSON.parse(sessionStorage.getItem(this.thumbKey) || "{}");
      all[eventId] = thumbs;
      sessionStorage.setItem(this.thumbKey, JSON.stringify(all));
    } catch { /* quota: thumbnails only live until reload */ }
    const el = this.userMsgs.get(eventId);
    if (el && !el.querySelector(".thumbs")) {
      el.querySelector(".attach-note")?.remove();
      el.querySelector(".body").prepend(h("div", { class: "thumbs" }, thumbs.map((src) => h("img", { src, alt: "attached image" }))));
    }
  }

  // ------------------------------------------------------------------ scrolling

  nearBottom() {
    const s = this.scroller;
    return !s || s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  scrollToBottom(force) {
    if (!this.scroller) return;
    if (force || this.nearBottom()) this.scroller.scrollTop = this.scroller.scrollHeight;
    this.jump.hidden = true;
  }
}

function makeThumb(dataUrl) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => {
      const size = 192;
      const scale = Math.min(1, size / Math.max(img.width, img.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(img.width * scale));
      canvas.height = Math.max(1, Math.round(img.height * scale));
      canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
      try { resolve(canvas.toDataURL("image/jpeg", 0.8)); } catch { resolve(dataUrl); }
    };
    img.onerror = () => resolve(dataUrl);
    img.src = dataUrl;
  });
}
