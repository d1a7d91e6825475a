// Accounts in the studio: the sign-in page (and joining with the class's code) when the server has accounts,
// and the user menu: name, role, log out, my API tokens, download all my work.

import { api, setCsrfToken } from "./api.js";
import { h } from "./dom.js";

/** Who is signed in: {accounts, user, csrf_token}, or {signedOut: true, join} when the server asks for a sign-in. */
export async function whoAmI() {
  const response = await fetch("/api/auth/me");
  if (response.status === 401) {
    const body = await response.json().catch(() => ({}));
    return { signedOut: true, join: Boolean(body.join) };
  }
  if (!response.ok) throw new Error(`The server answered ${response.status} to /api/auth/me.`);
  const me = await response.json();
  setCsrfToken(me.csrf_token);
  return me;
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || `The server answered ${response.status}.`);
  return answer;
}

function field(label, props) {
  const id = props.id || `signin-${props.name}`;
  return h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, required: true, ...props }));
}

function form(title, fields, submit, onSubmit) {
  const error = h("p", { class: "form-error", role: "alert" });
  const el = h("form", { class: "signin-form", "aria-label": title }, h("h2", {}, title), ...fields, error,
    h("button", { type: "submit", class: "primary" }, submit));
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const values = Object.fromEntries(new FormData(el));
    try {
      await onSubmit(values);
      location.reload(); // the session cookie is set: start the studio as this user
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
  return el;
}

/** The sign-in page, in place of the studio's pages; with `join`, also the form that makes an account with the class's code. */
export function showSignIn(main, { join }) {
  document.querySelector(".top nav")?.setAttribute("hidden", "");
  for (const page of main.querySelectorAll(".page")) page.hidden = true;
  const section = h("section", { id: "page-signin", class: "page signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", {}, "This studio is shared by a class: sign in with the name and password you were given."),
    form("Your account", [
      field("Name", { name: "username", autocomplete: "username", autocapitalize: "none" }),
      field("Password", { name: "password", type: "password", autocomplete: "current-password" }),
    ], "Sign in", (values) => post("/api/auth/login", values)));
  if (join) {
    section.append(form("New here? Join the class", [
      field("Join code", { name: "code", autocomplete: "off" }),
      field("Choose a name", { name: "username", id: "join-username", autocomplete: "username", autocapitalize: "none" }),
      field("Choose a password (8 characters or more)", { name: "password", id: "join-password", type: "password", minLength: 8, autocomplete: "new-password" }),
    ], "Join", (values) => post("/api/auth/join", values)));
  }
  main.append(section);
  // The console's QR code opens the studio at #join=CODE: the code is filled in.
  const code = new URLSearchParams(location.hash.slice(1)).get("join");
  const codeField = section.querySelector("input[name=code]");
  if (code && codeField) codeField.value = code;
  document.title = "Sign in · Local Diffusion";
  document.body.dataset.ready = "true";
  section.querySelector("input")?.focus();
}

/** The user menu in the header: name and role, log out, my API tokens, download all my work. */
export function installUserMenu(header, user) {
  const tokens = h("button", { type: "button", onclick: () => showTokens() }, "My API tokens");
  const logout = h("button", {
    type: "button",
    onclick: async () => {
      await api.post("/api/auth/logout").catch(() => {});
      location.reload();
    },
  }, "Log out");
  const menu = h("details", { class: "user-menu" },
    h("summary", {}, `${user.name} · ${user.role}${user.frozen ? " (paused)" : ""}`),
    h("div", { class: "user-menu-items" },
      h("a", { href: "/api/me/export", download: "" }, "Download all my work"), tokens, logout));
  header.append(menu);
}

async function showTokens() {
  const list = h("ul", { class: "token-list" });
  const shown = h("p", { class: "token-new", role: "status" });
  const label = h("input", { id: "token-label", name: "label", maxLength: 100, placeholder: "for example: Krita plugin" });
  const dialog = h("dialog", { class: "tokens", "aria-labelledby": "tokens-title" },
    h("h2", { id: "tokens-title" }, "My API tokens"),
    h("p", {}, "A token lets a program act as you: send it as 'Authorization: Bearer TOKEN', or as the password with your name (A1111 clients)."),
    list,
    h("form", { class: "token-form", onsubmit: (event) => { event.preventDefault(); create(); } },
      h("label", { for: "token-label" }, "Label"), label, h("button", { type: "submit", class: "primary" }, "New token")),
    shown,
    h("button", { type: "button", class: "close", onclick: () => dialog.close() }, "Close"));
  dialog.addEventListener("close", () => dialog.remove());

  async function refresh() {
    const tokens = await api.get("/api/auth/tokens");
    list.replaceChildren(...(tokens.length ? tokens.map((t) => h("li", {},
      `${t.label || "(no label)"} · made ${new Date(t.created_at * 1000).toLocaleDateString()}`,
      h("button", { type: "button", onclick: async () => { await api.del(`/api/auth/tokens/${t.id}`); refresh(); } }, "Delete")))
      : [h("li", {}, "No tokens yet.")]));
  }
  async function create() {
    try {
      const made = await api.post("/api/auth/tokens", { label: label.value });
      shown.replaceChildren("Copy it now; it is shown only once: ", h("code", {}, made.token));
      label.value = "";
      refresh();
    } catch (error) {
      shown.textContent = error.detail || error.message;
    }
  }
  document.body.append(dialog);
  dialog.showModal();
  refresh();
}
