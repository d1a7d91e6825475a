// Form fields with a label, a plain-language explanation (from /api/parameters) and a place for errors.
//
// Each field is a <div class="field" data-field="NAME">; its control has the id "f-NAME" and the
// name NAME, so that a server error naming a field finds its place next to the control.

import { h } from "./dom.js";

let parameters = {};

/** Give the explanations and limits that /api/parameters returned; call before building fields. */
export function setParameters(value) {
  parameters = value || {};
}

export function param(name) {
  return parameters[name] || {};
}

export function labelOf(name, fallback) {
  return param(name).label || fallback || name;
}

let openHelp = null;

function closeOpenHelp() {
  if (openHelp) {
    openHelp.classList.remove("help-open");
    for (const link of openHelp.querySelectorAll(".help a")) link.tabIndex = -1;
    openHelp.querySelector(".info")?.setAttribute("aria-expanded", "false");
    openHelp = null;
  }
}

document.addEventListener("click", (event) => {
  if (openHelp && !openHelp.contains(event.target)) closeOpenHelp();
});
// Escape hides an explanation shown by focus too, until focus leaves its field.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  closeOpenHelp();
  const fieldEl = document.activeElement?.closest?.(".field");
  if (fieldEl) fieldEl.classList.add("help-dismissed");
});
document.addEventListener("focusout", (event) => event.target.closest?.(".field")?.classList.remove("help-dismissed"));

/** The "i" button and its explanation bubble; the control is described by the same text for screen readers. */
function helpParts(name, label, control) {
  const text = param(name).help;
  if (!text) return [null, null];
  const helpId = `help-${name}`;
  const bubble = h("p", { class: "help", id: helpId, role: "note" }, text);
  const button = h("button", {
    type: "button", class: "info", "aria-label": `What does ${label} do?`,
    "aria-expanded": "false", "aria-controls": helpId,
    onclick: (event) => {
      const field = event.currentTarget.closest(".field");
      const wasOpen = field === openHelp;
      closeOpenHelp();
      if (!wasOpen) {
        field.classList.add("help-open");
        for (const link of field.querySelectorAll(".help a")) link.tabIndex = 0; // now Tab reaches "More…"
        event.currentTarget.setAttribute("aria-expanded", "true");
        openHelp = field;
      }
    },
  }, "i");
  control.setAttribute("aria-describedby", [helpId, control.getAttribute("aria-describedby")].filter(Boolean).join(" "));
  return [button, bubble];
}

/** A field around `control` (which gets id f-NAME); `extra` goes after the control (buttons, a slider). */
export function field(name, control, { label, extra = [], className = "" } = {}) {
  const text = labelOf(name, label);
  control.id ||= `f-${name}`;
  if (!control.name) control.name = name;
  const [button, bubble] = helpParts(name, text, control);
  const error = h("p", { class: "field-error", id: `err-${name}`, hidden: true });
  const isCheck = control.type === "checkbox";
  const labelEl = h("label", { for: control.id }, text);
  const head = isCheck
    ? h("div", { class: "field-head check" }, control, labelEl, button)
    : h("div", { class: "field-head" }, labelEl, button);
  const body = isCheck ? null : h("div", { class: "field-body" }, control, ...extra);
  return h("div", { class: `field ${className}`.trim(), dataset: { field: name } }, head, body, bubble, error);
}

/** A number input limited by the parameter's min/max/step, with a linked slider when `slider` is set. */
export function numberField(name, { label, slider = false, min, max, step, value } = {}) {
  const p = param(name);
  const input = h("input", {
    type: "number", inputmode: "decimal",
    min: min ?? p.min ?? undefined, max: max ?? p.max ?? undefined, step: step ?? p.step ?? "any",
  });
  input.value = value ?? p.default ?? "";
  const extra = [];
  if (slider) {
    const range = h("input", {
      type: "range", tabindex: "-1", "aria-label": `${labelOf(name, label)} slider`,
      min: input.min, max: input.max, step: input.step === "any" ? "0.01" : input.step,
    });
    range.value = input.value;
    range.addEventListener("input", () => {
      input.value = range.value;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
    input.addEventListener("input", () => {
      range.value = input.value;
    });
    // Programmatic changes (filling a recipe) send "change"; keep the slider in step.
    input.addEventListener("change", () => {
      range.value = input.value;
    });
    extra.push(range);
  }
  return field(name, input, { label, extra, className: slider ? "with-slider" : "" });
}

export function selectField(name, options = [], { label } = {}) {
  const select = h("select", {});
  setOptions(select, options);
  return field(name, select, { label });
}

export function checkField(name, { label, checked = false } = {}) {
  const input = h("input", { type: "checkbox" });
  input.checked = checked ?? Boolean(param(name).default);
  return field(name, input, { label, className: "check-field" });
}

/** Replace a select's options; `options` are strings or [value, text] pairs. Keeps the value if still there. */
export function setOptions(select, options, keep = true) {
  const previous = select.value;
  select.replaceChildren(...options.map((option) => {
    const [value, text] = Array.isArray(option) ? option : [option, option];
    return h("option", { value }, text);
  }));
  if (keep && options.some((o) => (Array.isArray(o) ? o[0] : o) === previous)) select.value = previous;
}

/** Make sure a select offers `value` (a recipe's model or sampler may not exist here), then choose it. */
export function chooseOption(select, value, missingSuffix = " (not found here)") {
  if (value === null || value === undefined || value === "") return;
  if (![...select.options].some((o) => o.value === value)) select.append(h("option", { value }, value + missingSuffix));
  select.value = value;
}

/** Show one sentence under the named field (or return false if the form has no such field). */
export function showFieldError(root, name, message) {
  const fieldEl = root.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
  if (!fieldEl) return false;
  const error = fieldEl.querySelector(".field-error");
  error.textContent = message;
  error.hidden = false;
  const control = fieldEl.querySelector("input, select, textarea");
  if (control) {
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-errormessage", error.id);
  }
  return fieldEl;
}

export function clearFieldErrors(root) {
  for (const error of root.querySelectorAll(".field-error")) {
    error.hidden = true;
    error.textContent = "";
  }
  for (const control of root.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
}
