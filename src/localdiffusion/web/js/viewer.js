// The image viewer: one image with its full recipe, and what can be done with it.

import { api } from "./api.js";
import { h, emit, toast } from "./dom.js";
import { t } from "./i18n.js";
import { recipeView } from "./recipe-view.js";
import { ExplainPanel } from "./explain-panel.js";
import { UpscalePanel } from "./upscale.js";
import { ShareButton } from "./wall.js";

let dialog = null;
let parts = null;
let state = { id: null, ids: [], image: null, onChange: null };
let opener = null; // the element that had focus when the viewer opened: it gets focus back on close

function build() {
  parts = {
    title: h("h2", { id: "viewer-title" }, t("viewer.title")),
    figure: h("figure", { class: "viewer-image" }),
    details: h("div", { class: "viewer-details" }),
    star: h("button", { type: "button", class: "star", "aria-pressed": "false", onclick: toggleStar }, t("viewer.star")),
    download: h("a", { class: "button", download: "" }, t("viewer.download")),
    workflow: h("a", { class: "button", download: "" }, t("viewer.workflow")),
    prev: h("button", { type: "button", "aria-label": t("viewer.previous"), onclick: () => step(-1) }, "‹"),
    next: h("button", { type: "button", "aria-label": t("viewer.next"), onclick: () => step(1) }, "›"),
  };
  parts.explain = new ExplainPanel(parts.figure);
  parts.upscale = new UpscalePanel((id) => show(id));
  parts.share = new ShareButton();
  const actions = h("div", { class: "viewer-actions" },
    h("button", { type: "button", class: "primary", onclick: () => useRecipe() }, t("viewer.useSettings")),
    h("button", { type: "button", onclick: () => sendTo("img2img") }, t("viewer.sendImg2img")),
    h("button", { type: "button", onclick: () => sendTo("inpaint") }, t("viewer.sendInpaint")),
    parts.download, parts.workflow, parts.star, parts.share.el,
    h("button", { type: "button", class: "danger", onclick: remove }, t("viewer.delete")), parts.explain.button, parts.upscale.button);
  dialog = h("dialog", { class: "viewer", "aria-labelledby": "viewer-title" },
    h("div", { class: "viewer-head" }, parts.title, parts.prev, parts.next,
      h("button", { type: "button", class: "close", "aria-label": t("viewer.close"), onclick: () => dialog.close() }, "×")),
    h("div", { class: "viewer-body" }, parts.figure, h("div", { class: "viewer-side" }, actions, parts.upscale.el, parts.explain.el, parts.details)));
  dialog.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
  });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  // Focus goes back where it was (or, if that is gone, to the page) rather than to the document body.
  dialog.addEventListener("close", () => {
    const back = opener?.isConnected ? opener : document.getElementById("main");
    opener = null;
    back?.focus();
  });
  document.body.append(dialog);
}

/** Open image `id`; `ids` (optional) lets the arrows walk through a list; `onChange` hears of stars and deletes. */
export async function openViewer(id, { ids = [], onChange = null } = {}) {
  if (!dialog) build();
  state = { id, ids, image: null, onChange };
  if (!dialog.open) {
    opener = document.activeElement !== document.body ? document.activeElement : null;
    dialog.showModal();
  }
  await show(id);
}

async function show(id) {
  state.id = id;
  const index = state.ids.indexOf(id);
  parts.prev.hidden = parts.next.hidden = state.ids.length < 2;
  parts.prev.disabled = index <= 0;
  parts.next.disabled = index < 0 || index >= state.ids.length - 1;
  parts.title.textContent = t("viewer.imageNumber", { id });
  const picture = h("img", { src: `/api/images/${id}/file`, alt: t("viewer.imageNumber", { id }) });
  parts.figure.replaceChildren(picture);
  parts.explain.reset(id);
  parts.upscale.reset(id);
  parts.share.load(`/api/images/${id}`);
  parts.details.replaceChildren(h("p", {}, t("viewer.loadingRecipe")));
  try {
    const image = await api.get(`/api/images/${id}`);
    if (state.id !== id) return;
    state.image = image;
    picture.alt = image.recipe?.prompt || image.prompt || t("viewer.imageNumber", { id });
    parts.download.href = `/api/images/${id}/file?download=true`;
    parts.workflow.href = `/api/images/${id}/comfyui?download=true`;
    parts.workflow.hidden = !image.recipe;
    setStar(Boolean(image.starred));
    const when = image.created_at ? new Date(image.created_at * 1000).toLocaleString(document.documentElement.lang) : "";
    parts.details.replaceChildren(
      h("p", { class: "meta" }, [`${image.width} × ${image.height}`, when,
        image.decoder === "fast" ? t("viewer.decodedFast") : image.decoder === "full" ? t("viewer.decodedFull") : ""].filter(Boolean).join(" · ")),
      image.recipe ? recipeView(image.recipe) : h("p", {}, t("viewer.noRecipe")),
      image.infotext ? h("details", {}, h("summary", {}, t("viewer.infotext")), h("pre", {}, image.infotext)) : null);
  } catch (error) {
    parts.details.replaceChildren(h("p", { class: "job-error" }, error.detail || String(error)));
  }
}

function step(delta) {
  const index = state.ids.indexOf(state.id) + delta;
  if (index >= 0 && index < state.ids.length) show(state.ids[index]);
}

function setStar(starred) {
  parts.star.setAttribute("aria-pressed", String(starred));
  parts.star.textContent = starred ? t("viewer.starred") : t("viewer.star");
}

async function toggleStar() {
  if (!state.image) return;
  const starred = parts.star.getAttribute("aria-pressed") !== "true";
  try {
    await api.patch(`/api/images/${state.id}`, { starred });
    state.image.starred = starred;
    setStar(starred);
    state.onChange?.({ type: "star", id: state.id, starred });
  } catch (error) {
    toast(error.detail);
  }
}

async function remove() {
  const id = state.id;
  if (!confirm(t("viewer.confirmDelete"))) return;
  try {
    await api.del(`/api/images/${id}`);
    state.onChange?.({ type: "delete", id });
    const index = state.ids.indexOf(id);
    state.ids = state.ids.filter((other) => other !== id);
    if (state.ids.length) show(state.ids[Math.min(index, state.ids.length - 1)]);
    else dialog.close();
    toast(t("viewer.deleted"));
  } catch (error) {
    toast(error.detail);
  }
}

function useRecipe() {
  if (!state.image?.recipe) return toast(t("viewer.noSettings"));
  emit("use-recipe", state.image.recipe);
  dialog.close();
}

async function sendTo(mode) {
  const id = state.id;
  try {
    const blob = await api.blob(`/api/images/${id}/file`);
    emit("send-to", { mode, blob, name: `image-${id}.png`, recipe: state.image?.recipe || null });
    dialog.close();
  } catch (error) {
    toast(error.detail);
  }
}
