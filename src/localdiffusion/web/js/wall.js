// The class wall: what people in the class shared (images with their recipe, comics), newest first. "Use these
// settings" fills the Generate form with a shared image's recipe; a facilitator can hide an item (participants
// stop seeing it) or show it again. Pictures come through the wall's own addresses (/api/wall/{id}/...).

import { api } from "./api.js";
import { h, emit, on, toast } from "./dom.js";
import { recipeView } from "./recipe-view.js";
import { whoAmI } from "./account.js";

export async function initWall(section) {
  let me = null;
  try {
    me = await whoAmI();
  } catch {
    /* an older server: no roles */
  }
  return new WallPage(section, me?.user?.role || "owner");
}

class WallPage {
  constructor(section, role) {
    this.section = section;
    this.manager = role !== "participant";
    this.status = h("p", { class: "wall-count", role: "status", "aria-live": "polite" });
    this.grid = h("ul", { class: "wall-grid", "aria-label": "Shared work" });
    section.append(
      h("div", { class: "toolbar" }, h("h1", { id: "wall-title" }, "Class wall"),
        h("button", { type: "button", id: "wall-refresh", onclick: () => this.reload() }, "Refresh")),
      h("p", { class: "hint" }, "What people in the class shared: each image with the settings that made it. Share your own from the image viewer or the comic editor."),
      this.status, this.grid);
    on("wall-changed", () => {
      if (!section.hidden) this.reload();
    });
  }

  show() {
    return this.reload();
  }

  async reload() {
    let items;
    try {
      items = (await api.get("/api/wall")).items;
    } catch (error) {
      this.status.textContent = error.detail || String(error);
      return;
    }
    this.status.textContent = items.length ? `${items.length} shared item${items.length === 1 ? "" : "s"}` : "";
    this.grid.replaceChildren(...items.map((item) => this.card(item)));
    if (!items.length) this.grid.append(h("li", { class: "empty" }, "Nothing is shared yet."));
  }

  card(item) {
    const image = h("img", { src: item.thumb, alt: item.kind === "image" ? item.prompt || "A shared image" : `The first page of ${item.title}`, loading: "lazy" });
    const title = item.kind === "image" ? item.prompt : item.title;
    const by = h("p", { class: "wall-owner" }, `by ${item.owner}`);
    const actions = h("div", { class: "row wall-actions" });
    if (item.kind === "image" && item.recipe) {
      actions.append(h("button", { type: "button", class: "primary", onclick: () => emit("use-recipe", item.recipe) }, "Use these settings"));
    }
    if (item.kind === "comic" && item.class_comic) actions.append(h("a", { class: "button", href: `#/comic/${item.project_id}` }, "Open the class comic"));
    actions.append(h("a", { class: "button", href: item.url, target: "_blank", rel: "noopener" }, "Full size"));
    if (this.manager) {
      actions.append(h("button", { type: "button", class: item.hidden ? "" : "danger", onclick: () => this.hide(item, !item.hidden) },
        item.hidden ? "Show again" : "Hide"));
    }
    const details = item.kind === "image" && item.recipe
      ? h("details", {}, h("summary", {}, "Settings"), recipeView(item.recipe)) : null;
    return h("li", { class: `wall-item${item.hidden ? " hidden-item" : ""}`, dataset: { share: String(item.id), kind: item.kind } },
      h("a", { href: item.url, target: "_blank", rel: "noopener", class: "wall-picture" }, image),
      h("p", { class: "wall-title" }, title || "(no prompt)"), by,
      item.hidden ? h("p", { class: "wall-hidden" }, `Hidden by ${item.hidden_by || "a facilitator"}: participants do not see it.`) : null,
      details, actions);
  }

  async hide(item, hide) {
    try {
      await api.post(`/api/wall/${item.id}/${hide ? "hide" : "unhide"}`, {});
      toast(hide ? "Hidden from the participants." : "Shown on the wall again.");
      await this.reload();
    } catch (error) {
      toast(error.detail || String(error));
    }
  }
}

/** A "Share to class wall" toggle for one thing (`base`: /api/images/{id} or /api/comics/{id}); call `load()` after
 * the thing changes. */
export class ShareButton {
  constructor() {
    this.base = null;
    this.shared = false;
    this.el = h("button", { type: "button", class: "share-wall", "aria-pressed": "false", onclick: () => this.toggle() }, "Share to class wall");
  }

  async load(base) {
    this.base = base;
    this.set(false);
    try {
      const state = await api.get(`${base}/share`);
      if (this.base === base) this.set(state.shared);
    } catch {
      /* an older server without the wall */
      this.el.hidden = true;
    }
  }

  set(shared) {
    this.shared = shared;
    this.el.setAttribute("aria-pressed", String(shared));
    this.el.textContent = shared ? "Shared on the wall ✓ (unshare)" : "Share to class wall";
  }

  async toggle() {
    if (!this.base) return;
    try {
      if (this.shared) await api.del(`${this.base}/share`);
      else await api.post(`${this.base}/share`, {});
      this.set(!this.shared);
      toast(this.shared ? "Shared on the class wall." : "Taken off the class wall.");
      emit("wall-changed");
    } catch (error) {
      toast(error.detail || String(error));
    }
  }
}
