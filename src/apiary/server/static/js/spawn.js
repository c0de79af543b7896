// Spawning a colony from a conversation (POST /colony-spawn) and opening it (POST /api/sessions).

import { enc, post } from "./api.js";
import { openDialog, toast } from "./dialogs.js";
import { clear, h, icon } from "./dom.js";
import { navigate, refreshSessions } from "./store.js";

const NAME_RE = /^[a-z0-9_]+$/;

export async function openColony(colonyPath, button) {
  if (!colonyPath) return;
  const original = button ? [...button.childNodes] : null;
  if (button) { button.disabled = true; clear(button); button.append(h("span", { class: "spinner" }), "Opening…"); }
  try {
    // The server waits for a pending compaction (up to 180 s) before it answers.
    let session;
    for (let attempt = 0; ; attempt++) {
      try {
        session = await post("/api/sessions", { agent_path: colonyPath });
        break;
      } catch (err) {
        if (err.status === 409 && err.body.loading && attempt < 60) { await new Promise((r) => setTimeout(r, 2000)); continue; }
        if (err.status === 409 && /already exists/.test(err.message) && err.body.session_id) { session = err.body; break; }
        throw err;
      }
    }
    await refreshSessions();
    navigate(`/s/${session.session_id}`);
    return session;
  } catch (err) {
    toast(err.message, "err");
    return null;
  } finally {
    if (button && button.isConnected) { button.disabled = false; clear(button); button.append(...original); }
  }
}

export function spawnDialog(view) {
  const nameInput = h("input", { class: "input", id: "colony-name", name: "colony_name", placeholder: "e.g. market_research", autocomplete: "off", spellcheck: "false", required: true });
  const tasksInput = h("textarea", { class: "textarea", id: "colony-tasks", name: "tasks", rows: 5, placeholder: "One task per line, e.g.\nList our five main competitors\nSummarise their pricing pages" });
  const error = h("div", { class: "d-error", role: "alert", hidden: true, id: "spawn-error" });
  const submit = h("button", { class: "btn primary", type: "submit", id: "spawn-submit" }, icon("spawn"), "Spawn colony");
  const cancel = h("button", { class: "btn", type: "button" }, "Cancel");
  const form = h("form", { id: "spawn-form", novalidate: true },
    h("p", {}, `Fork this conversation into a colony: workers get ${view.queenName()}'s context and work through the task queue.`),
    error,
    h("div", { class: "field" }, h("label", { for: "colony-name" }, "Colony name"), nameInput,
      h("span", { class: "hint" }, "Lowercase letters, digits and underscores.")),
    h("div", { class: "field" }, h("label", { for: "colony-tasks" }, "Tasks"), tasksInput,
      h("span", { class: "hint" }, "Each line becomes one task in the colony's queue. You can leave it empty.")),
    h("div", { class: "d-foot", style: { padding: "4px 0 12px" } }, cancel, submit));
  const body = h("div", {}, form);
  let unsubscribe = null;
  const { close, dialog } = openDialog({ title: "Spawn a colony", body, onClose: () => unsubscribe?.() });
  dialog.id = "spawn-dialog";
  cancel.addEventListener("click", () => close(null));
  nameInput.addEventListener("input", () => {
    const v = nameInput.value;
    const cleaned = v.toLowerCase().replace(/[\s-]+/g, "_");
    if (cleaned !== v) nameInput.value = cleaned;
  });
  tasksInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  setTimeout(() => nameInput.focus(), 0);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = nameInput.value.trim();
    if (!name) { showError("Give the colony a name."); nameInput.focus(); return; }
    if (!NAME_RE.test(name)) { showError("The name may only contain lowercase letters, digits and underscores."); nameInput.focus(); return; }
    const tasks = tasksInput.value.split("\n").map((l) => l.trim()).filter(Boolean).map((goal) => ({ goal }));
    submit.disabled = true;
    clear(submit); submit.append(h("span", { class: "spinner" }), "Spawning…");
    error.hidden = true;
    try {
      const payload = { colony_name: name };
      if (tasks.length) payload.tasks = tasks;
      const res = await post(`/api/sessions/${enc(view.id)}/colony-spawn`, payload);
      showResult(res);
    } catch (err) {
      showError(err.message);
      submit.disabled = false;
      clear(submit); submit.append(icon("spawn"), "Spawn colony");
    }
  });

  function showError(message) {
    error.textContent = message;
    error.hidden = false;
  }

  function showResult(res) {
    const card = view.colonyCard(res.colony_name, {
      colony_path: res.colony_path, compaction_status: res.compaction_status, task_ids: res.task_ids, is_new: res.is_new,
    });
    const status = h("span", { class: "tag", id: "spawn-status" });
    view.renderCompactionTag(status, card ? card.info.compaction_status : res.compaction_status);
    unsubscribe = view.on((ev) => {
      if (ev.type === "custom" && ev.data && ev.data.name === "colony_compaction_status" && ev.data.colony_name === res.colony_name) {
        const c = view.colonyCards.get(res.colony_name);
        view.renderCompactionTag(status, c ? c.info.compaction_status : ev.data.status);
      }
    });
    const open = h("button", { class: "btn primary", type: "button", id: "open-colony" }, icon("colony"), "Open colony");
    open.addEventListener("click", async () => {
      const session = await openColony(res.colony_path, open);
      if (session) close(null);
    });
    const done = h("button", { class: "btn", type: "button" }, "Close");
    done.addEventListener("click", () => close(null));
    clear(body);
    body.append(
      h("div", { class: "status-line" }, icon("check"), h("strong", {}, `Colony “${res.colony_name}” ${res.is_new ? "created" : "updated"}`)),
      h("dl", { class: "kv", id: "spawn-result" },
        h("dt", {}, "Folder"), h("dd", {}, res.colony_path),
        h("dt", {}, "Tasks"), h("dd", {}, `${(res.task_ids || []).length} queued`),
        h("dt", {}, "Queen session"), h("dd", {}, res.queen_session_id),
        h("dt", {}, "Transcript"), h("dd", {}, status)),
      h("p", {}, "The copied conversation is compacted in the background; opening the colony waits for it to finish."),
      h("div", { class: "d-foot", style: { padding: "4px 0 12px" } }, done, open));
    open.focus();
  }
}
