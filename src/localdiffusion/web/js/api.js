// The studio JSON API (/api): every request carries this tab's client id.

import { t } from "./i18n.js";

const CLIENT_KEY = "localdiffusion.client";
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

let csrfToken = null;
let pendingClient = null;

/** The signed-in session's CSRF token (from sign-in or /api/auth/me): every change this page asks for carries it
 * as X-CSRF-Token, which a page of another site cannot know. Null without accounts. */
export function setCsrfToken(token) {
  // An id asked for before the token was known (the event socket opens as the modules load) is refused for the
  // lack of it, a session's change without the token: those who ask from now on ask again, with it.
  if (token && token !== csrfToken) pendingClient = null;
  csrfToken = token || null;
}

/** The headers a request of `method` carries besides its own: the CSRF token on changes. */
function sessionHeaders(method) {
  return csrfToken && !SAFE_METHODS.has(method) ? { "X-CSRF-Token": csrfToken } : {};
}

/** This tab's client id: a secret the server issues (POST /api/clients), kept in sessionStorage so that a
 * reload of the same tab keeps it (and its jobs); other tabs never see it. Whoever holds it may cancel and
 * watch this tab's jobs, so it is sent only to this server, as X-Client-Id and on the event socket. */
export function clientId() {
  const known = sessionStorage.getItem(CLIENT_KEY);
  if (known) return Promise.resolve(known);
  if (pendingClient) return pendingClient;
  const asking = fetch("/api/clients", { method: "POST", headers: sessionHeaders("POST") })
    .then(async (response) => {
      if (!response.ok) throw await errorFrom(response);
      const { client } = await response.json();
      sessionStorage.setItem(CLIENT_KEY, client);
      return client;
    })
    .catch((error) => {
      throw error instanceof ApiError ? error : new ApiError(0, "The studio server cannot be reached; check that it is still running.", null);
    })
    .finally(() => {
      if (pendingClient === asking) pendingClient = null; // not one asked again since (setCsrfToken)
    });
  pendingClient = asking;
  return asking;
}

/** Server error codes (app.py's error handlers) with a message in the catalogues. */
const SERVER_ERRORS = { invalid_field: "error.invalidField" };

/** An answer the server refused: `detail` is one sentence for a person, `field` names the bad field if any. */
export class ApiError extends Error {
  constructor(status, detail, field, code = null, values = {}) {
    super(detail);
    this.code = code;
    this.values = values;
    this.status = status;
    this.detail = detail;
    this.field = field || null;
  }
}

async function errorFrom(response) {
  let detail = `The server answered ${response.status} ${response.statusText}.`;
  let field = null;
  let code = null;
  let values = {};
  try {
    const body = await response.json();
    if (typeof body.detail === "string") detail = body.detail;
    else if (Array.isArray(body.detail) && body.detail[0]?.msg) detail = body.detail[0].msg;
    field = body.field || body.errors?.[0]?.field || null;
    code = body.code || null;
    values = body.values || {};
    // Errors with a code the catalogue knows are said in the person's language (the English stays in `detail`).
    if (SERVER_ERRORS[code]) detail = t(SERVER_ERRORS[code], values);
  } catch {
    /* not JSON: keep the status line */
  }
  return new ApiError(response.status, detail, field, code, values);
}

/** fetch() with the client id; JSON in and out. `body` may be a plain object (sent as JSON) or FormData. */
export async function request(method, path, body) {
  const headers = { "X-Client-Id": await clientId(), ...sessionHeaders(method) };
  const init = { method, headers };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "The studio server cannot be reached; check that it is still running.", null);
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.blob();
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body) => request("POST", path, body ?? {}),
  patch: (path, body) => request("PATCH", path, body),
  del: (path) => request("DELETE", path),

  /** Upload an image file or blob: resolves to {ref, width, height}. */
  upload(blob, name = "image.png") {
    const form = new FormData();
    form.append("file", blob, name);
    return request("POST", "/api/uploads", form);
  },

  /** Read the generation settings stored in any image file. */
  pngInfo(blob, name = "image.png") {
    const form = new FormData();
    form.append("file", blob, name);
    return request("POST", "/api/pnginfo", form);
  },

  /** The bytes of a URL under this server, as a Blob (sent with the client id). */
  async blob(path) {
    const response = await fetch(path, { headers: { "X-Client-Id": await clientId() } });
    if (!response.ok) throw await errorFrom(response);
    return response.blob();
  },
};

/** Cached GETs for lists that rarely change within a session (samplers, parameters, presets...). */
const cache = new Map();
export function cached(path) {
  if (!cache.has(path)) {
    const pending = api.get(path).catch((error) => {
      cache.delete(path);
      throw error;
    });
    cache.set(path, pending);
  }
  return cache.get(path);
}
export function forget(path) {
  cache.delete(path);
}
