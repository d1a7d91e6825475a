// Read the settings stored in any image (this studio's, A1111, ComfyUI, InvokeAI...): drop it anywhere on the page.

import { api } from "./api.js";
import { h, emit } from "./dom.js";
import { recipeView } from "./recipe-view.js";

const SOURCES = { ours: "Local Diffusion", a1111: "AUTOMATIC1111 / Forge", comfyui: "ComfyUI", invokeai: "InvokeAI", fooocus: "Fooocus", novelai: "NovelAI" };
let dialog = null;
let body = null;
let useButton = null;
let found = null;

function build() {
  body = h("div", { class: "pnginfo-body" });
  useButton = h("button", { type: "button", class: "primary", onclick: () => {
    emit("use-recipe", found);
    dialog.close();
  } }, "Use these settings");
  dialog = h("dialog", { class: "pnginfo", "aria-labelledby": "pnginfo-title" },
    h("div", { class: "viewer-head" }, h("h2", { id: "pnginfo-title" }, "Settings in the image"),
      h("button", { type: "button", class: "close", "aria-label": "Close", onclick: () => dialog.close() }, "×")),
    body, h("div", { class: "viewer-actions" }, useButton));
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
  document.body.append(dialog);
}

/** Send `file` to /api/pnginfo and show what was recovered. */
export async function readSettings(file) {
  if (!dialog) build();
  found = null;
  useButton.hidden = true;
  body.replaceChildren(h("p", {}, `Reading ${file.name || "the image"}…`));
  if (!dialog.open) dialog.showModal();
  try {
    const info = await api.pngInfo(file, file.name || "image.png");
    found = info.recipe;
    useButton.hidden = !found;
    const source = SOURCES[info.source] || info.source;
    body.replaceChildren(
      h("p", { class: "meta" }, found ? `Made with ${source || "an unknown tool"}.` : "This image carries no generation settings that can be read."),
      found ? recipeView({ ...found, model: found.model || info.model_name }) : null,
      found ? sameOrNot(info.differences || []) : null,
      info.infotext ? h("details", {}, h("summary", {}, "Parameters as text"), h("pre", {}, info.infotext)) : null);
  } catch (error) {
    body.replaceChildren(h("p", { class: "job-error" }, error.detail || String(error)));
  }
}

/** Whether "Use these settings" gives this very picture here, and if not, why (the server's sentences). */
function sameOrNot(differences) {
  if (!differences.length) return h("p", { class: "meta replay-same" }, "Used here, these settings give this same picture.");
  return h("div", { class: "replay-differs", role: "note" },
    h("p", {}, "Used here, these settings will give a different picture:"),
    h("ul", {}, ...differences.map((reason) => h("li", {}, reason))));
}

/** A file picker for the same thing, for those who prefer the keyboard to dragging. */
export function choosePngToRead() {
  const input = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp" });
  input.addEventListener("change", () => input.files[0] && readSettings(input.files[0]));
  input.click();
}

/** Dropping an image anywhere (outside an image input) reads its settings. */
export function installPageDrop() {
  const overlay = document.getElementById("drop-overlay");
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    if (!event.target.closest?.("ld-image-input")) overlay.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    const onInput = Boolean(event.target.closest?.("ld-image-input"));
    overlay.hidden = onInput;
  });
  document.addEventListener("drop", (event) => {
    depth = 0;
    overlay.hidden = true;
    if (!hasFiles(event)) return;
    event.preventDefault();
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (file) readSettings(file);
  });
}
