// The colony panel (right side), shown when the session has a colony loaded (has_worker).
//
// Goal progress, run controls (trigger, pause), worker questions (inject), the task queue (snapshot +
// live stream), workers, executions with their checkpoints (stop, resume, replay), timers and
// triggers, and a feed of worker activity. Every section shows the API's own error text.

import { enc, get, post } from "./api.js";
import { toast } from "./dialogs.js";
import { clear, clockTime, debounce, h, icon, oneLine, shortId } from "./dom.js";
import { SseStream } from "./sse.js";

const ACTIVE = new Set(["active", "running", "in_progress", "claimed"]);

function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(Number(s))) return "";
  s = Math.max(0, Math.round(Number(s)));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function errorBox(err) {
  return h("div", { class: "api-error", role: "alert" }, err && err.message ? err.message : String(err));
}

function section(id, title, ...headerExtras) {
  const content = h("div", { class: "content" });
  const el = h("section", { class: "panel", id }, h("header", {}, h("h3", {}, title), h("span", { class: "grow" }), headerExtras), content);
  return { el, content };
}

export class ColonyPanel {
  constructor(host, view) {
    this.host = host;
    this.view = view;
    this.session = view.session;
    this.running = new Map();      // execution id -> {stream_id, started}
    this.questions = new Map();    // request id -> {ev, answered}
    this.activity = [];
    this.checkpointsOpen = new Set();
    this.selectedCheckpoint = new Map(); // worker session id -> checkpoint id
    this.destroyed = false;
    this.refreshRuns = debounce(() => { this.loadWorkers(); this.loadExecutions(); }, 500);
    this.refreshGoal = debounce(() => this.loadGoal(), 500);
    this.refreshSession = debounce(() => this.view.refreshSession(), 500);
  }

  get sid() { return this.view.id; }
  get colonyName() { return this.session && (this.session.colony_id || (this.session.colonies || [])[0]); }

  mount() {
    clear(this.host);
    this.title = h("div", { class: "grow" });
    const head = h("div", { class: "colony-head" }, icon("colony"), this.title,
      h("button", { class: "btn ghost icon small", type: "button", title: "Refresh", "aria-label": "Refresh colony", onclick: () => this.loadAll() }, icon("refresh")),
      h("button", { class: "btn ghost icon small", type: "button", title: "Hide colony panel", "aria-label": "Hide colony panel", onclick: () => { this.view.colonyOpen = false; this.view.app.setColonyVisible(false); this.view.renderHeader(); } }, icon("x")));
    this.goal = section("colony-goal", "Goal");
    this.run = section("colony-run", "Run");
    this.qs = section("colony-questions", "Worker questions");
    this.tasks = section("colony-tasks", "Tasks");
    this.workers = section("colony-workers", "Workers");
    this.execs = section("colony-executions", "Executions");
    this.timers = section("colony-timers", "Timers & triggers");
    this.feed = section("colony-activity", "Activity");
    this.qs.el.hidden = true;
    this.body = h("div", { class: "colony-body" }, this.goal.el, this.run.el, this.qs.el, this.tasks.el, this.workers.el,
      this.execs.el, this.timers.el, this.feed.el);
    this.host.append(head, this.body);
    this.renderTitle();
    this.renderRun();
    this.renderTimers();
    this.renderFeed();
    this.loadAll();
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  destroy() {
    this.destroyed = true;
    clearInterval(this.ticker);
    this.progressStream?.close();
    this.workersStream?.close();
    this.refreshRuns.cancel();
    this.refreshGoal.cancel();
    clear(this.host);
  }

  update(session) {
    const colonyChanged = this.colonyName !== (session.colony_id || (session.colonies || [])[0]);
    this.session = session;
    this.renderTitle();
    this.renderTimers();
    this.renderRunEntryPoints();
    if (colonyChanged) this.openProgressStream();
  }

  renderTitle() {
    clear(this.title);
    const s = this.session || {};
    this.title.append(h("div", { class: "t" }, s.colony_name || s.colony_id || "Colony"),
      h("div", { class: "s" }, [s.goal || s.description, s.node_count ? `${s.node_count} node${s.node_count > 1 ? "s" : ""}` : ""].filter(Boolean).join(" · ") || s.agent_path || ""));
  }

  loadAll() {
    this.loadGoal();
    this.loadWorkers();
    this.loadExecutions();
    this.openProgressStream();
    this.openWorkersStream();
  }

  // ------------------------------------------------------------------ goal

  async loadGoal() {
    try {
      this.renderGoal(await get(`/api/sessions/${enc(this.sid)}/goal-progress`));
    } catch (err) {
      if (!this.destroyed) { clear(this.goal.content); this.goal.content.append(errorBox(err)); }
    }
  }

  renderGoal(g) {
    if (this.destroyed || !g) return;
    clear(this.goal.content);
    const pct = Math.round((Number(g.progress) || 0) * 1000) / 10;
    this.goal.content.append(h("div", { class: "progress-row" },
      h("div", { class: "progress", style: { flex: "1" }, role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct), id: "goal-bar" },
        h("div", { style: { width: pct + "%" } })),
      h("span", { class: "pct" }, pct + "%")));
    const criteria = Object.entries(g.criteria_status || {});
    if (criteria.length) {
      this.goal.content.append(h("ul", { class: "criteria" }, criteria.map(([id, c]) =>
        h("li", {}, h("span", { class: c.met ? "ok" : "muted" }, c.met ? "✓" : "○"),
          h("span", {}, c.description || id, c.met && c.evidence ? h("span", { class: "muted" }, " — " + oneLine(c.evidence, 80)) : null)))));
    }
    const t = g.tasks;
    if (t && t.total) this.goal.content.append(h("div", { class: "muted", style: { marginTop: "6px" } }, `${t.done} of ${t.total} tasks done${t.failed ? `, ${t.failed} failed` : ""}`));
    else if (!criteria.length) this.goal.content.append(h("div", { class: "muted", style: { marginTop: "6px" } }, "No tasks or success criteria yet."));
  }

  // ------------------------------------------------------------------ run controls

  renderRun() {
    clear(this.run.content);
    this.epSelect = h("select", { class: "select", id: "entry-point", "aria-label": "Entry point" });
    this.inputJson = h("textarea", { class: "textarea mono", id: "trigger-input", rows: 3, placeholder: '{"task": "…"}  (optional input_data)' });
    this.runResult = h("div", { class: "muted", id: "run-result", style: { marginTop: "6px" } });
    const trigger = h("button", { class: "btn small primary", type: "button", id: "trigger-run" }, icon("play"), "Trigger");
    const pause = h("button", { class: "btn small", type: "button", id: "pause-all", title: "Stop every worker execution and pause timers; the queen keeps running" }, icon("pause"), "Pause all");
    trigger.addEventListener("click", () => this.trigger(trigger));
    pause.addEventListener("click", () => this.pause(pause));
    const inputDetails = h("details", { style: { marginTop: "6px" } }, h("summary", { class: "muted", style: { cursor: "pointer" } }, "Input data"), this.inputJson);
    this.epSelect.classList.add("grow-select");
    this.run.content.append(h("div", { class: "inline-form" }, h("label", { class: "label", for: "entry-point" }, "Entry point"), this.epSelect),
      inputDetails, h("div", { class: "inline-form", style: { marginTop: "8px" } }, trigger, pause), this.runResult);
    this.renderRunEntryPoints();
  }

  renderRunEntryPoints() {
    if (!this.epSelect) return;
    const current = this.epSelect.value;
    clear(this.epSelect);
    const eps = ((this.session && this.session.entry_points) || []).filter((ep) => ep && ep.id && !("task" in ep && "fire_count" in ep));
    const ids = eps.length ? eps.map((ep) => ep.id) : ["default"];
    for (const id of ids) {
      const ep = eps.find((e) => e.id === id);
      this.epSelect.append(h("option", { value: id }, ep && ep.name && ep.name !== id ? `${ep.name} (${id})` : id));
    }
    if (ids.includes(current)) this.epSelect.value = current;
  }

  async trigger(btn) {
    let input = {};
    const raw = this.inputJson.value.trim();
    if (raw) {
      try { input = JSON.parse(raw); } catch { this.runMessage("Input data must be valid JSON.", true); return; }
      if (!input || typeof input !== "object" || Array.isArray(input)) { this.runMessage("Input data must be a JSON object.", true); return; }
    }
    btn.disabled = true;
    try {
      const res = await post(`/api/sessions/${enc(this.sid)}/trigger`, { entry_point_id: this.epSelect.value || "default", input_data: input });
      this.runMessage(`Started execution ${res.execution_id}`);
      this.refreshRuns();
    } catch (err) {
      this.runMessage(err.body && err.body.error === "credentials_required" ? `Credentials required: ${err.body.message || ""}` : err.message, true);
    } finally {
      btn.disabled = false;
    }
  }

  async pause(btn) {
    btn.disabled = true;
    try {
      const res = await post(`/api/sessions/${enc(this.sid)}/pause`);
      const n = (res.cancelled || []).length;
      this.runMessage(n ? `Paused ${n} execution${n > 1 ? "s" : ""}; timers paused.` : `Nothing was running; timers paused.`
        + ((res.cancelling || []).length ? ` ${(res.cancelling || []).length} still winding down.` : ""));
      this.refreshRuns();
    } catch (err) {
      this.runMessage(err.message, true);
    } finally {
      btn.disabled = false;
    }
  }

  runMessage(text, isError = false) {
    clear(this.runResult);
    this.runResult.className = isError ? "api-error" : "muted";
    this.runResult.style.marginTop = "6px";
    this.runResult.textContent = text;
  }

  // ------------------------------------------------------------------ worker questions (inject)

  renderQuestions() {
    const open = [...this.questions.values()].filter((q) => !q.answered);
    this.qs.el.hidden = !open.length;
    clear(this.qs.content);
    for (const q of open) {
      const input = h("textarea", { class: "textarea", rows: 2, placeholder: "Your answer to the worker…", "aria-label": "Answer" });
      const send = h("button", { class: "btn small primary", type: "button" }, "Send to worker");
      const status = h("span", { class: "muted" });
      const options = h("div", { class: "options", style: { display: "flex", gap: "4px", flexWrap: "wrap" } },
        (q.options || []).map((o) => h("button", { class: "btn small", type: "button", onclick: () => { input.value = String(o); input.focus(); } }, String(o))));
      const doSend = async () => {
        const content = input.value.trim();
        if (!content) { input.focus(); return; }
        send.disabled = true;
        try {
          const res = await post(`/api/sessions/${enc(this.sid)}/inject`, { node_id: q.nodeId || "worker", content, request_id: q.requestId });
          if (res.delivered) { q.answered = true; this.log(`Answered worker: ${oneLine(content, 60)}`, "ok"); this.renderQuestions(); }
          else { status.textContent = "Not delivered: no worker is waiting for this answer."; send.disabled = false; }
        } catch (err) {
          status.textContent = err.message;
          send.disabled = false;
        }
      };
      send.addEventListener("click", doSend);
      input.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); doSend(); } });
      this.qs.content.append(h("div", { class: "worker-q", dataset: { requestId: q.requestId || "" } },
        h("div", { class: "label" }, q.kind === "escalation" ? "Escalation" : "Question", q.execution ? ` · ${shortId(q.execution)}` : ""),
        h("div", { style: { fontWeight: "600" } }, q.text),
        q.context ? h("div", { class: "muted" }, oneLine(q.context, 240)) : null,
        options, input, h("div", { class: "row", style: { display: "flex", gap: "8px", alignItems: "center" } }, send, status)));
    }
  }

  // ------------------------------------------------------------------ tasks

  openProgressStream() {
    this.progressStream?.close();
    const name = this.colonyName;
    clear(this.tasks.content);
    if (!name) { this.tasks.content.append(h("div", { class: "muted" }, "No colony name.")); return; }
    this.loadTasks(name);
    this.progressStream = new SseStream(`/api/colonies/${enc(name)}/progress/stream`, {
      resume: false,
      onEvent: (data) => { if (data && data.tasks) this.renderTasks(data); },
      onFatal: (status, body) => { if (!this.tasksLoadedOk) { clear(this.tasks.content); this.tasks.content.append(errorBox(body.error || `HTTP ${status}`)); } },
    }).start();
  }

  async loadTasks(name) {
    try {
      this.renderTasks(await get(`/api/colonies/${enc(name)}/progress/snapshot`));
      this.tasksLoadedOk = true;
    } catch (err) {
      if (!this.destroyed) { clear(this.tasks.content); this.tasks.content.append(errorBox(err)); }
    }
  }

  renderTasks(snap) {
    if (this.destroyed) return;
    this.tasksLoadedOk = true;
    clear(this.tasks.content);
    const t = snap.tasks || {};
    const chip = (label, n, cls) => h("span", { class: "tag " + cls }, `${n ?? 0} ${label}`);
    this.tasks.content.append(h("div", { class: "counts", id: "task-counts" },
      chip("total", t.total, ""), chip("pending", t.pending, ""), chip("running", (t.claimed || 0) + (t.in_progress || 0), "warn"),
      chip("done", t.done, "ok"), t.failed ? chip("failed", t.failed, "err") : null));
    const items = snap.items || [];
    if (!items.length) { this.tasks.content.append(h("div", { class: "muted" }, "The queue is empty.")); return; }
    this.tasks.content.append(h("ul", { class: "task-list", id: "task-list" }, items.map((it) => {
      const steps = it.steps || [];
      const doneSteps = steps.filter((s) => s.status === "done" || s.status === "completed").length;
      const sub = [it.status.replace("_", " "), it.worker_id ? `worker ${shortId(it.worker_id)}` : "", steps.length ? `${doneSteps}/${steps.length} steps` : "", it.retry_count ? `retry ${it.retry_count}` : ""].filter(Boolean).join(" · ");
      return h("li", { class: "task-item", dataset: { taskId: it.id, status: it.status } },
        h("span", { class: "status-dot " + it.status, title: it.status }),
        h("div", { class: "goal" }, it.goal, h("div", { class: "sub" }, sub), it.last_error ? h("div", { class: "sub err" }, oneLine(it.last_error, 160)) : null));
    })));
  }

  // ------------------------------------------------------------------ workers

  openWorkersStream() {
    this.workersStream?.close();
    this.workersStream = new SseStream(`/api/sessions/${enc(this.sid)}/workers/stream`, {
      resume: false,
      onEvent: (data) => { if (data && Array.isArray(data.workers)) this.renderWorkers(data.workers); },
      onFatal: () => { /* the GET below shows the error */ },
    }).start();
  }

  async loadWorkers() {
    try {
      const res = await get(`/api/sessions/${enc(this.sid)}/workers`);
      this.renderWorkers(res.workers || []);
    } catch (err) {
      if (!this.destroyed) { clear(this.workers.content); this.workers.content.append(errorBox(err)); }
    }
  }

  renderWorkers(workers) {
    if (this.destroyed) return;
    clear(this.workers.content);
    if (!workers.length) { this.workers.content.append(h("div", { class: "muted" }, "No workers yet. Trigger a run to start one.")); return; }
    const live = workers.filter((w) => w.status !== "historical");
    const rows = h("ul", { class: "rows", id: "worker-list" });
    for (const w of [...live, ...workers.filter((w) => w.status === "historical")]) {
      const r = w.result || null;
      const stop = ACTIVE.has(w.status) || w.status === "waiting"
        ? h("button", { class: "btn small danger", type: "button", onclick: (e) => this.stopWorker(w.worker_id, e.currentTarget) }, icon("stop"), "Stop") : null;
      rows.append(h("li", { class: "row-item", dataset: { workerId: w.worker_id } },
        h("div", { class: "top" }, h("span", { class: "status-dot " + (w.status === "historical" ? (r && r.status) || "completed" : w.status) }),
          h("span", { class: "id", title: w.worker_id }, w.worker_id), h("span", { class: "tag" }, w.status), stop),
        w.task ? h("div", { class: "detail" }, oneLine(w.task, 160)) : null,
        r ? h("div", { class: "detail" }, [r.status, r.summary ? oneLine(r.summary, 140) : "", r.error ? "error: " + oneLine(r.error, 100) : "",
          r.duration_seconds ? fmtSeconds(r.duration_seconds) : "", r.tokens_used ? `${r.tokens_used} tokens` : ""].filter(Boolean).join(" · ")) : null));
    }
    this.workers.content.append(rows);
  }

  async stopWorker(workerId, btn) {
    btn.disabled = true;
    try {
      const res = await post(`/api/sessions/${enc(this.sid)}/workers/${enc(workerId)}/stop`);
      toast(res.stopped ? "Worker stopped." : "Worker is still winding down.");
    } catch (err) {
      toast(err.message, "err");
    } finally {
      btn.disabled = false;
      this.refreshRuns();
    }
  }

  // ------------------------------------------------------------------ executions & checkpoints

  async loadExecutions() {
    try {
      const res = await get(`/api/sessions/${enc(this.sid)}/worker-sessions`);
      this.execList = res.worker_sessions || [];
      this.execError = null;
    } catch (err) {
      this.execError = err;
    }
    this.renderExecutions();
  }

  renderExecutions() {
    if (this.destroyed) return;
    clear(this.execs.content);
    if (this.execError) this.execs.content.append(errorBox(this.execError));
    const list = [...(this.execList || [])];
    for (const [id] of this.running) {
      if (!list.some((w) => w.worker_session_id === id)) list.unshift({ worker_session_id: id, status: "active", checkpoint_count: 0, transient: true });
    }
    if (!list.length) {
      if (!this.execError) this.execs.content.append(h("div", { class: "muted" }, "No executions yet."));
      return;
    }
    const rows = h("ul", { class: "rows", id: "execution-list" });
    for (const ws of list) rows.append(this.executionRow(ws));
    this.execs.content.append(rows);
  }

  executionRow(ws) {
    const id = ws.worker_session_id;
    const active = ws.status === "active" || this.running.has(id);
    const status = active ? "active" : ws.status;
    const li = h("li", { class: "row-item", dataset: { workerSession: id, status } });
    const btns = h("div", { class: "btns" });
    if (active) {
      btns.append(h("button", { class: "btn small danger", type: "button", dataset: { action: "stop" }, onclick: (e) => this.stopExecution(id, e.currentTarget) }, icon("stop"), "Stop"));
    }
    if (ws.checkpoint_count) {
      const toggle = h("button", { class: "btn small", type: "button", dataset: { action: "checkpoints" }, "aria-expanded": String(this.checkpointsOpen.has(id)) },
        `${this.checkpointsOpen.has(id) ? "Hide" : "Show"} checkpoints (${ws.checkpoint_count})`);
      toggle.addEventListener("click", () => {
        if (this.checkpointsOpen.has(id)) this.checkpointsOpen.delete(id); else this.checkpointsOpen.add(id);
        this.renderExecutions();
      });
      btns.append(toggle);
    }
    li.append(h("div", { class: "top" }, h("span", { class: "status-dot " + status }), h("span", { class: "id", title: id }, id), h("span", { class: "tag" + (active ? " warn" : status === "completed" ? " ok" : status === "failed" ? " err" : "") }, status)),
      h("div", { class: "detail" }, [ws.entry_point ? `entry ${ws.entry_point}` : "", ws.updated_at ? `updated ${clockTime(ws.updated_at)}` : "", ws.current_run_id ? `run ${ws.current_run_id}` : ""].filter(Boolean).join(" · ")),
      btns);
    if (this.checkpointsOpen.has(id)) li.append(this.checkpointBox(ws));
    return li;
  }

  checkpointBox(ws) {
    const id = ws.worker_session_id;
    const box = h("div", { class: "checkpoint-box" }, h("div", { class: "muted", style: { marginTop: "6px" } }, "Loading checkpoints…"));
    get(`/api/sessions/${enc(this.sid)}/worker-sessions/${enc(id)}/checkpoints`).then((res) => {
      clear(box);
      const cps = res.checkpoints || [];
      if (!cps.length) { box.append(h("div", { class: "muted" }, "No checkpoints.")); return; }
      if (!this.selectedCheckpoint.has(id)) this.selectedCheckpoint.set(id, res.latest_checkpoint_id || cps[cps.length - 1].checkpoint_id);
      const name = "cp-" + id;
      const list = h("div", { class: "checkpoints", role: "radiogroup", "aria-label": "Checkpoints" });
      for (const cp of cps) {
        const radio = h("input", { type: "radio", name, value: cp.checkpoint_id, checked: this.selectedCheckpoint.get(id) === cp.checkpoint_id });
        radio.addEventListener("change", () => this.selectedCheckpoint.set(id, cp.checkpoint_id));
        list.append(h("label", { class: "checkpoint", title: cp.checkpoint_id }, radio,
          h("span", { class: "ct" }, `${cp.checkpoint_type || "checkpoint"} · ${cp.current_node || ""}${cp.description ? " · " + cp.description : ""}`),
          cp.is_clean === false ? h("span", { class: "tag warn" }, "dirty") : null,
          h("span", { class: "cd" }, clockTime(cp.created_at))));
      }
      const mode = h("select", { class: "select", "aria-label": "Replay mode" }, h("option", { value: "rerun" }, "rerun (call the model)"), h("option", { value: "recorded" }, "recorded (free, same events)"));
      const resume = h("button", { class: "btn small primary", type: "button", dataset: { action: "resume" }, disabled: ws.is_resumable === false }, icon("play"), "Resume");
      const replay = h("button", { class: "btn small", type: "button", dataset: { action: "replay" } }, icon("replay"), "Replay");
      const msg = h("div", { class: "muted" });
      resume.addEventListener("click", () => this.fromCheckpoint("resume", id, { }, resume, msg));
      replay.addEventListener("click", () => this.fromCheckpoint("replay", id, { mode: mode.value }, replay, msg));
      box.append(list, h("div", { class: "inline-form", style: { marginTop: "6px" } }, resume, replay, mode), msg);
    }).catch((err) => { clear(box); box.append(errorBox(err)); });
    return box;
  }

  async fromCheckpoint(kind, wsId, extra, btn, msg) {
    const checkpoint = this.selectedCheckpoint.get(wsId);
    btn.disabled = true;
    try {
      const res = await post(`/api/sessions/${enc(this.sid)}/${kind}`, { session_id: wsId, checkpoint_id: checkpoint, ...extra });
      msg.className = "muted";
      msg.textContent = `${kind === "resume" ? "Resumed" : "Replaying"} ${res.execution_id} from ${res.checkpoint_id}`;
      this.refreshRuns();
    } catch (err) {
      msg.className = "api-error";
      msg.textContent = err.message;
    } finally {
      btn.disabled = false;
    }
  }

  async stopExecution(executionId, btn) {
    btn.disabled = true;
    try {
      const res = await post(`/api/sessions/${enc(this.sid)}/stop`, { execution_id: executionId });
      toast(res.stopped ? `Stopped ${shortId(executionId)}.` : `Stopping ${shortId(executionId)}… still winding down.`);
      if (res.stopped) this.running.delete(executionId);
    } catch (err) {
      if (err.status === 404) this.running.delete(executionId);
      toast(err.message, "err");
    } finally {
      btn.disabled = false;
      this.refreshRuns();
    }
  }

  // ------------------------------------------------------------------ timers & triggers

  renderTimers() {
    if (!this.timers) return;
    clear(this.timers.content);
    this.fetchedAt = Date.now();
    const eps = (this.session && this.session.entry_points) || [];
    const timed = eps.filter((ep) => ep && (ep.trigger_type && ep.trigger_type !== "manual"));
    if (!timed.length) { this.timers.content.append(h("div", { class: "muted" }, "No timers or triggers. Entry points that run on a schedule appear here.")); return; }
    const rows = h("ul", { class: "rows", id: "trigger-list" });
    for (const ep of timed) {
      const cfg = ep.trigger_config || {};
      const schedule = cfg.cron ? `cron ${cfg.cron}` : cfg.interval_minutes ? `every ${cfg.interval_minutes} min` : cfg.path ? `webhook ${cfg.path}` : "";
      const isQueenTrigger = "fire_count" in ep || "task" in ep;
      const next = h("span", { class: "muted", dataset: { nextFire: ep.next_fire_in ?? "" } });
      const btns = h("div", { class: "btns" });
      if (isQueenTrigger) {
        for (const [action, label] of [["run", "Run now"], ["activate", "Activate"], ["deactivate", "Deactivate"]]) {
          btns.append(h("button", { class: "btn small", type: "button", onclick: (e) => this.triggerAction(ep.id, action, e.currentTarget) }, label));
        }
      }
      rows.append(h("li", { class: "row-item", dataset: { triggerId: ep.id } },
        h("div", { class: "top" }, h("span", { class: "id" }, ep.name || ep.id), h("span", { class: "tag info" }, ep.trigger_type), next),
        h("div", { class: "detail" }, [schedule, ep.task ? oneLine(ep.task, 100) : "", ep.fire_count ? `fired ${ep.fire_count}×` : ""].filter(Boolean).join(" · ")),
        btns));
    }
    this.timers.content.append(rows);
    this.tick();
  }

  async triggerAction(triggerId, action, btn) {
    btn.disabled = true;
    try {
      const res = await post(`/api/sessions/${enc(this.sid)}/triggers/${enc(triggerId)}/${action}`);
      toast(`${triggerId}: ${res.status}`);
      this.refreshSession();
    } catch (err) {
      toast(err.message, "err");
    } finally {
      btn.disabled = false;
    }
  }

  tick() {
    if (!this.timers) return;
    const elapsed = (Date.now() - (this.fetchedAt || Date.now())) / 1000;
    for (const el of this.timers.content.querySelectorAll("[data-next-fire]")) {
      const base = el.dataset.nextFire;
      if (base === "") { el.textContent = ""; continue; }
      const left = Number(base) - elapsed;
      el.textContent = left > 0 ? `next in ${fmtSeconds(left)}` : "due";
    }
  }

  // ------------------------------------------------------------------ events from the session stream

  afterReplay() {
    if (this.feedDirty) { this.feedDirty = false; this.renderFeed(); }
    this.renderQuestions();
  }

  onEvent(ev) {
    this.eventTime = ev.timestamp ? new Date(ev.timestamp) : null;
    try { this.handleEvent(ev); } finally { this.eventTime = null; }
  }

  handleEvent(ev) {
    const d = ev.data || {};
    const worker = ev.stream_id !== "queen";
    switch (ev.type) {
      case "execution_started":
        if (worker) { this.running.set(ev.execution_id, { started: Date.now() }); this.log(`Run ${shortId(ev.execution_id)} started`); this.refreshRuns(); }
        break;
      case "execution_resumed":
        this.log(`Run ${shortId(ev.execution_id)} resumed from ${oneLine(d.checkpoint_id || "", 40)}`);
        break;
      case "execution_completed":
      case "execution_failed":
      case "execution_paused":
        if (worker) {
          this.running.delete(ev.execution_id);
          const word = ev.type === "execution_completed" ? "completed" : ev.type === "execution_paused" ? "paused" : d.cancelled ? "stopped" : "failed";
          this.log(`Run ${shortId(ev.execution_id)} ${word}${d.error && !d.cancelled ? ": " + oneLine(d.error, 80) : ""}`, word === "failed" ? "err" : word === "completed" ? "ok" : "");
          for (const q of this.questions.values()) if (q.execution === ev.execution_id) q.answered = true;
          this.renderQuestions();
          this.refreshRuns();
          this.refreshGoal();
        }
        break;
      case "tool_call_started":
        if (worker) this.log(`${ev.node_id || "worker"} → ${d.tool_name} ${oneLine(d.tool_input ?? {}, 50)}`);
        break;
      case "tool_call_completed":
        if (worker && d.is_error) this.log(`${d.tool_name} failed: ${oneLine(d.result ?? "", 80)}`, "err");
        if (worker && d.tool_name === "escalate") this.settleQuestions(ev.execution_id, "escalation");
        break;
      case "node_action_plan":
        if (worker) this.log(`Plan: ${oneLine(d.plan || "", 120)}`);
        break;
      case "subagent_report":
        this.log(`Report from ${shortId(d.worker_id || "")}: ${d.status || ""}${d.summary ? " — " + oneLine(d.summary, 80) : ""}`, d.status === "failed" ? "err" : "ok");
        this.refreshRuns();
        break;
      case "goal_progress":
      case "goal_achieved":
        this.renderGoal(d);
        if (ev.type === "goal_achieved") this.log("Goal achieved", "ok");
        break;
      case "escalation_requested":
        this.questions.set(d.request_id || `esc-${ev.id}`, {
          kind: "escalation", requestId: d.request_id, nodeId: ev.node_id || "worker", execution: ev.execution_id,
          text: d.reason || "The worker needs guidance.", context: typeof d.context === "string" ? d.context : (d.context ? JSON.stringify(d.context) : ""),
        });
        this.log(`Escalation: ${oneLine(d.reason || "", 80)}`, "err");
        this.renderQuestions();
        break;
      case "client_input_requested":
        if (worker && Array.isArray(d.questions)) {
          for (const q of d.questions) {
            this.questions.set(q.id || `q-${ev.id}`, {
              kind: "question", requestId: q.id, nodeId: ev.node_id || "worker", execution: ev.execution_id,
              text: q.prompt || q.question || "The worker asks for input.", options: q.options || [],
            });
          }
          this.renderQuestions();
        }
        break;
      case "client_input_received":
        if (worker) this.settleQuestions(ev.execution_id, "question");
        break;
      case "trigger_available": case "trigger_activated": case "trigger_deactivated":
      case "trigger_fired": case "trigger_removed": case "trigger_updated":
        this.log(`Trigger ${d.name || d.trigger_id}: ${ev.type.replace("trigger_", "")}`);
        this.refreshSession();
        break;
      case "credentials_required":
        this.log("Credentials required to run this colony", "err");
        break;
      default:
        break;
    }
  }

  settleQuestions(executionId, kind) {
    let changed = false;
    for (const q of this.questions.values()) {
      if (!q.answered && q.execution === executionId && q.kind === kind) { q.answered = true; changed = true; }
    }
    if (changed && !this.view.replaying) this.renderQuestions();
  }

  log(text, kind = "") {
    const at = this.eventTime && !Number.isNaN(this.eventTime.getTime()) ? this.eventTime : new Date();
    this.activity.push({ at, text, kind });
    if (this.activity.length > 200) this.activity.shift();
    if (!this.view.replaying) this.renderFeed();
    else this.feedDirty = true;
  }

  renderFeed() {
    if (!this.feed) return;
    clear(this.feed.content);
    if (!this.activity.length) { this.feed.content.append(h("div", { class: "muted" }, "Worker activity shows up here.")); return; }
    const ul = h("ul", { class: "activity", id: "activity" });
    for (const a of this.activity.slice(-80).reverse()) {
      ul.append(h("li", { class: a.kind }, h("span", { class: "at" }, a.at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })), h("span", {}, a.text)));
    }
    this.feed.content.append(ul);
  }
}
