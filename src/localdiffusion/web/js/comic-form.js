// Small form helpers shared by the comic editor's panels.

import { h } from "./dom.js";

/** A short random id, like the server's (10 hex digits). */
export function newId() {
  const bytes = new Uint8Array(5);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A label over a control (with an optional hint under it). */
export function labelled(text, control, hint) {
  control.id ||= `comic-${text.toLowerCase().replace(/\W+/g, "-")}-${newId()}`;
  return h("div", { class: "field" }, h("label", { for: control.id, class: "label" }, text), control,
    hint ? h("p", { class: "hint" }, hint) : null);
}

/** An input (or a textarea, given `rows`) bound to `object[key]`: typing updates it and calls `onChange`. */
export function bound(object, key, onChange, props = {}) {
  const { nullable, ...attrs } = props;
  const el = h(attrs.rows ? "textarea" : "input", attrs);
  const value = object[key];
  el.value = value === null || value === undefined ? "" : String(value);
  el.addEventListener(attrs.type === "number" ? "change" : "input", () => {
    if (attrs.type === "number") {
      const text = el.value.trim();
      if (text === "" && nullable) object[key] = null;
      else if (text !== "" && !Number.isNaN(Number(text))) object[key] = Number(text);
      else el.value = object[key] ?? "";
    } else {
      object[key] = el.value;
    }
    onChange();
  });
  return el;
}
