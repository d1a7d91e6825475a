// Small DOM helpers shared by the pages: element building, ids, a toast, a page-wide event bus.

/** h("button", {class: "primary", onclick}, "Text", child...): attributes, properties and listeners in one object. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A note, shown only on a phone (CSS), that an editor needs a larger screen; on a tablet it works with touch. */
export function needsLargerScreen(text) {
  return h("p", { class: "needs-larger-screen", role: "note" }, text);
}

let counter = 0;
/** A document-unique id with a readable prefix. */
export function uid(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** Page-to-page messages: "use-recipe", "send-to", "navigate", "images-changed". */
export const bus = new EventTarget();
export function emit(type, detail) {
  bus.dispatchEvent(new CustomEvent(type, { detail }));
}
export function on(type, handler) {
  bus.addEventListener(type, (event) => handler(event.detail));
}

let toastTimer = 0;
/** A short message at the bottom of the screen, read out by screen readers. */
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, 4000);
}

export function formatBytes(bytes) {
  if (!bytes) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

export function roundTo8(value) {
  return Math.max(64, Math.round(value / 8) * 8);
}

/** Say `text` to screen readers without moving focus: politely (after what they are reading) or, for errors, at once. */
export function announce(text, { assertive = false } = {}) {
  const el = document.getElementById(assertive ? "announce-alert" : "announce-polite");
  if (!el) return;
  // Clear first, so the same sentence twice is read twice.
  el.textContent = "";
  setTimeout(() => {
    el.textContent = text;
  }, 50);
}
