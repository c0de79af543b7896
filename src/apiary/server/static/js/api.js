// JSON calls to apiary's HTTP API, with the optional API token (X-Hive-Token, kept in sessionStorage).

const TOKEN_KEY = "apiary.apiToken";

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.error === "session_locked" && body.message ? body.message : body.error)) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body || {};
    this.code = body && body.error;
  }
}

let tokenPrompt = async () => null;
let pendingPrompt = null;

/** Installs the UI that asks for the token: fn(rejected: boolean) => Promise<string|null>. */
export function setTokenPrompt(fn) { tokenPrompt = fn; }

export function currentToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

export function authHeaders() {
  const token = currentToken();
  return token ? { "X-Hive-Token": token } : {};
}

/**
 * Called after a 401. `usedToken` is the token the failed request carried: when another request
 * has stored a new one meanwhile, just retry with it. Otherwise ask once (concurrent callers share
 * the same question). Resolves true when a token is available to retry with.
 */
export async function handleUnauthorized(usedToken) {
  const now = currentToken();
  if (now && now !== usedToken) return true;
  if (!pendingPrompt) {
    pendingPrompt = (async () => {
      const token = await tokenPrompt(Boolean(usedToken));
      if (token) {
        try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* storage disabled */ }
      }
      return Boolean(token);
    })().finally(() => { pendingPrompt = null; });
  }
  return pendingPrompt;
}

export async function api(method, path, body, { signal } = {}) {
  for (let attempt = 0; attempt < 6; attempt++) {
    const token = currentToken();
    const headers = { Accept: "application/json", ...authHeaders() };
    const init = { method, headers, signal, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, { error: "Cannot reach the apiary server. Check that it is running." });
    }
    if (resp.status === 401) {
      await resp.text().catch(() => "");
      if (await handleUnauthorized(token)) continue;
      throw new ApiError(401, { error: "unauthorized: this server needs an API token" });
    }
    const text = await resp.text().catch(() => "");
    let data;
    try { data = text ? JSON.parse(text) : {}; } catch { data = { error: text.slice(0, 300) || resp.statusText }; }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }
  throw new ApiError(401, { error: "unauthorized" });
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body = {}, opts) => api("POST", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);
export const patch = (path, body = {}, opts) => api("PATCH", path, body, opts);

export const enc = encodeURIComponent;
