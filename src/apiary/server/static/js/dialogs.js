// Modal dialogs (native <dialog>: focus trap and Escape for free) and toasts.

import { avatar, h, icon } from "./dom.js";

export function openDialog({ title, body, foot, onClose, className = "", labelledBy }) {
  const closeBtn = h("button", { class: "btn ghost icon small", type: "button", "aria-label": "Close" }, icon("x"));
  const heading = h("h2", { id: labelledBy || "dlg-" + Math.random().toString(36).slice(2) }, title);
  const dialog = h("dialog", { class: className, "aria-labelledby": heading.id },
    h("div", { class: "d-head" }, heading, closeBtn),
    h("div", { class: "d-body" }, body),
    foot ? h("div", { class: "d-foot" }, foot) : null);
  let closed = false;
  const close = (value) => {
    if (closed) return;
    closed = true;
    try { dialog.close(); } catch { /* already closed */ }
    dialog.remove();
    onClose?.(value);
  };
  closeBtn.addEventListener("click", () => close(null));
  dialog.addEventListener("cancel", (e) => { e.preventDefault(); close(null); });
  dialog.addEventListener("mousedown", (e) => { if (e.target === dialog) close(null); });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

export function confirmDialog({ title, message, confirm = "OK", danger = false }) {
  return new Promise((resolve) => {
    const ok = h("button", { class: "btn " + (danger ? "danger" : "primary"), type: "button" }, confirm);
    const cancel = h("button", { class: "btn", type: "button" }, "Cancel");
    const { close } = openDialog({
      title, body: h("p", {}, message), foot: [cancel, ok], onClose: (v) => resolve(v === true),
    });
    cancel.addEventListener("click", () => close(false));
    ok.addEventListener("click", () => close(true));
    setTimeout(() => ok.focus(), 0);
  });
}

export function tokenDialog(rejected) {
  return new Promise((resolve) => {
    const input = h("input", { class: "input", type: "password", id: "api-token", autocomplete: "off", spellcheck: "false", placeholder: "Paste the API token" });
    const ok = h("button", { class: "btn primary", type: "submit" }, icon("key"), "Continue");
    const form = h("form", { method: "dialog" },
      h("p", {}, "This apiary server requires an API token. It is kept for this browser tab only (sessionStorage)."),
      rejected ? h("div", { class: "d-error", role: "alert" }, "That token was not accepted. Check it and try again.") : null,
      h("div", { class: "field" }, h("label", { for: "api-token" }, "API token"), input,
        h("span", { class: "hint" }, "The server prints it at first start, or set it with APIARY_SERVER__API_TOKEN.")),
      h("div", { class: "d-foot", style: { padding: "4px 0 12px" } }, ok));
    const { close } = openDialog({ title: "API token required", body: form, onClose: (v) => resolve(v || null) });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (value) close(value);
      else input.focus();
    });
    setTimeout(() => input.focus(), 0);
  });
}

export function queenPickerDialog(queens, { title = "New session", subtitle = "Pick the queen you want to talk to." } = {}) {
  return new Promise((resolve) => {
    let handle;
    const grid = h("div", { class: "queen-picker" }, queens.map((q) =>
      h("button", { type: "button", dataset: { queen: q.id }, onclick: () => handle.close(q) },
        avatar(q.name, q.id, "lg"),
        h("span", {}, h("div", { class: "qn" }, q.name), h("div", { class: "qt" }, q.title)))));
    handle = openDialog({ title, body: [h("p", {}, subtitle), grid], onClose: (v) => resolve(v || null) });
    handle.dialog.style.width = "min(560px, calc(100vw - 32px))";
    setTimeout(() => grid.querySelector("button")?.focus(), 0);
  });
}

export function toast(message, kind = "") {
  const host = document.getElementById("toasts");
  if (!host) return;
  const el = h("div", { class: "toast " + kind, role: kind === "err" ? "alert" : "status" }, message);
  host.append(el);
  setTimeout(() => el.remove(), kind === "err" ? 6000 : 3500);
}
