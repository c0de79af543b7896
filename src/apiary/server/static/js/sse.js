// Server-Sent Events over fetch (EventSource cannot send the X-Hive-Token header).
//
// Frames are parsed as the SSE spec says (id:, data:, event:, retry:, comments). The last id seen
// is sent back as `last_event_id` on every reconnect, so nothing is lost and nothing repeats. A
// gap frame (type "gap", no id) makes the stream reconnect at once from the last id. A silent
// connection (no bytes, not even a keepalive, for `staleMs`) is dropped and reopened.

import { authHeaders, currentToken, handleUnauthorized } from "./api.js";

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});

export class SseStream {
  /**
   * @param {string} url          path of the stream, may carry a query string
   * @param {object} opts
   *   lastId      resume point (number or null); only used when resume is true
   *   resume      send last_event_id on (re)connect (default true)
   *   onEvent     (data, {id, event}) for every frame with data
   *   onStatus    ("connecting" | "open" | "reconnecting" | "closed", detail)
   *   onFatal     (status, body) when the server refuses the stream for good (404, 400)
   *   onOpen      () each time a connection is established
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.lastId = opts.lastId ?? null;
    this.resume = opts.resume !== false;
    this.onEvent = opts.onEvent || (() => {});
    this.onStatus = opts.onStatus || (() => {});
    this.onFatal = opts.onFatal || (() => {});
    this.onOpen = opts.onOpen || (() => {});
    this.staleMs = opts.staleMs || 45000;
    this.retryMs = 3000;
    this.closed = false;
    this.stopper = new AbortController();
    this.current = null;
    this.failures = 0;
  }

  start() {
    this._loop().catch((err) => { if (!this.closed) console.warn("event stream stopped", err); });
    return this;
  }

  close() {
    this.closed = true;
    this.stopper.abort();
    this.current?.abort();
    this.onStatus("closed");
  }

  /** Drop the current connection and reconnect from the last id right away. */
  reconnectNow() {
    this.failures = 0;
    this.current?.abort();
  }

  _buildUrl() {
    const u = new URL(this.url, location.href);
    if (this.resume && this.lastId !== null && this.lastId !== undefined) u.searchParams.set("last_event_id", String(this.lastId));
    return u.pathname + u.search;
  }

  async _loop() {
    while (!this.closed) {
      this.onStatus(this.failures ? "reconnecting" : "connecting");
      const outcome = await this._connectOnce();
      if (this.closed || outcome === "fatal") return;
      if (outcome === "gap") { this.failures = 0; continue; }
      if (outcome === "auth") continue;
      this.failures += 1;
      this.onStatus("reconnecting");
      // First retry fast (a restart or a dropped connection), then back off up to the server's retry hint.
      const delay = Math.min(this.retryMs, [250, 750, 1500, 3000][Math.min(this.failures - 1, 3)]);
      await sleep(delay, this.stopper.signal);
    }
  }

  async _connectOnce() {
    const ctrl = new AbortController();
    this.current = ctrl;
    const token = currentToken();
    let resp;
    try {
      resp = await fetch(this._buildUrl(), {
        headers: { Accept: "text/event-stream", ...authHeaders() }, signal: ctrl.signal, cache: "no-store",
      });
    } catch {
      return "error";
    }
    if (resp.status === 401) {
      try { await resp.body?.cancel(); } catch { /* ignore */ }
      return (await handleUnauthorized(token)) ? "auth" : "fatal";
    }
    if (!resp.ok) {
      let body = {};
      try { body = await resp.json(); } catch { /* not JSON */ }
      if (resp.status === 404 || resp.status === 400) {
        this.onFatal(resp.status, body);
        return "fatal";
      }
      return "error";
    }
    this.failures = 0;
    this.onStatus("open");
    try { this.onOpen(); } catch (err) { console.warn(err); }

    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let dataLines = [];
    let frameId = null;
    let eventName = "";
    let gap = false;
    let stale = null;
    const armStale = () => {
      clearTimeout(stale);
      stale = setTimeout(() => ctrl.abort(), this.staleMs);
    };
    armStale();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        armStale();
        buffer += decoder.decode(value, { stream: true });
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line === "") {
            if (dataLines.length) {
              if (frameId !== null) this.lastId = frameId;
              let data = null;
              try { data = JSON.parse(dataLines.join("\n")); } catch { data = null; }
              if (data && data.type === "gap" && data.id === undefined) gap = true;
              if (data !== null) {
                try { this.onEvent(data, { id: frameId, event: eventName }); } catch (err) { console.warn("event handler failed", err); }
              }
            }
            dataLines = []; frameId = null; eventName = "";
            if (gap) break;
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let val = colon === -1 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") dataLines.push(val);
          else if (field === "id") { const n = Number(val); frameId = Number.isFinite(n) && val !== "" ? n : null; }
          else if (field === "event") eventName = val;
          else if (field === "retry") { const n = Number(val); if (Number.isFinite(n) && n > 0) this.retryMs = n; }
        }
        if (gap) break;
      }
    } catch {
      // aborted (stale, gap, close) or the connection broke
    } finally {
      clearTimeout(stale);
      try { ctrl.abort(); } catch { /* ignore */ }
    }
    return gap ? "gap" : "error";
  }
}
