// The API as the page calls it: relative URLs (so a path prefix in front of chorus works), the tab's key on
// every request, errors as ApiError with the server's {error: {type, message, code}} and Retry-After.

const KEY_NAME = "chorus.apiKey";

export class ApiError extends Error {
  constructor(status, body, retryAfterS) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || null;
    this.code = error.code || null;
    this.param = error.param || null;
    this.retryAfterS = retryAfterS;
  }
}

// Kept in sessionStorage only: gone with the tab, never in localStorage or a cookie.
export const key = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (value) => sessionStorage.setItem(KEY_NAME, value),
  clear: () => sessionStorage.removeItem(KEY_NAME),
};

let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export async function request(path, { method = "GET", json, form, headers = {}, signal, apiKey } = {}) {
  const all = { ...headers };
  const token = apiKey ?? key.get();
  if (token) all.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    all["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method, headers: all, body, signal, cache: "no-store" });
  if (!response.ok) {
    throw await errorOf(response, apiKey === undefined);
  }
  return response;
}

async function errorOf(response, reportUnauthorized) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const retry = Number(response.headers.get("Retry-After"));
  const err = new ApiError(response.status, body, Number.isFinite(retry) && retry > 0 ? retry : null);
  if (response.status === 401 && reportUnauthorized) onUnauthorized(err);
  return err;
}

export async function getJson(path, options) {
  return (await request(path, options)).json();
}

export async function postJson(path, json, options = {}) {
  return (await request(path, { ...options, method: "POST", json })).json();
}
