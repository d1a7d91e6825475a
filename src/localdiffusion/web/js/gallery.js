// The Gallery page: a paged grid of thumbnails, newest first, with search over the prompts.
//
// Only one page (PAGE images) is asked for at a time, and thumbnails load lazily as they scroll into
// view, so a gallery of ten thousand images opens as fast as one of ten.

import { api } from "./api.js";
import { h, on } from "./dom.js";
import { t } from "./i18n.js";
import { openViewer } from "./viewer.js";
import { choosePngToRead } from "./pnginfo.js";

const PAGE = 60;

export function initGallery(section) {
  return new GalleryPage(section);
}

class GalleryPage {
  constructor(section) {
    this.section = section;
    this.items = [];
    this.offset = 0;
    this.hasMore = false;
    this.loading = false;
    this.generation = 0; // bumps on every new search, so late answers of an old one are dropped
    this.stale = true;
    this.build();
    on("images-changed", () => {
      this.stale = true;
      if (!section.hidden) this.reload();
    });
  }

  build() {
    this.search = h("input", { type: "search", id: "gallery-search", placeholder: t("gallery.searchPlaceholder"), autocomplete: "off" });
    let timer = 0;
    this.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.reload(), 250);
    });
    this.starred = h("input", { type: "checkbox", id: "gallery-starred", onchange: () => this.reload() });
    this.count = h("p", { class: "gallery-count", role: "status", "aria-live": "polite" });
    this.grid = h("ul", { class: "grid", "aria-label": t("gallery.images") });
    this.more = h("button", { type: "button", class: "load-more", hidden: true, onclick: () => this.loadMore() }, t("gallery.loadMore"));
    this.sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
    const toolbar = h("div", { class: "toolbar" },
      h("h2", {}, t("page.gallery")),
      h("div", { class: "search" }, h("label", { for: "gallery-search" }, t("gallery.search")), this.search),
      h("label", { class: "check", for: "gallery-starred" }, this.starred, " ", t("gallery.starredOnly")),
      h("button", { type: "button", onclick: choosePngToRead }, t("gallery.readPng")));
    this.section.append(toolbar, this.count, this.grid, this.more, this.sentinel);
    // Load the next page as the end of the grid comes near, as well as on the button.
    new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting) && this.hasMore && !this.loading) this.loadMore();
    }, { rootMargin: "600px" }).observe(this.sentinel);
  }

  /** Called whenever the page is shown. */
  show() {
    if (this.stale) this.reload();
  }

  query(offset) {
    const params = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
    const q = this.search.value.trim();
    if (q) params.set("q", q);
    if (this.starred.checked) params.set("starred", "true");
    return `/api/images?${params}`;
  }

  async reload() {
    this.stale = false;
    this.generation += 1;
    this.items = [];
    this.offset = 0;
    this.grid.replaceChildren();
    await this.loadMore(true);
  }

  async loadMore(fresh = false) {
    if (this.loading && !fresh) return;
    const generation = this.generation;
    this.loading = true;
    this.more.disabled = true;
    try {
      const page = await api.get(this.query(this.offset));
      if (generation !== this.generation) return;
      this.items.push(...page.items);
      this.offset += page.items.length;
      this.hasMore = page.has_more;
      this.grid.append(...page.items.map((item) => this.tile(item)));
      this.showCount();
    } catch (error) {
      if (generation === this.generation) this.count.textContent = error.detail || String(error);
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        this.more.disabled = false;
        this.more.hidden = !this.hasMore;
      }
    }
  }

  showCount() {
    const n = this.items.length;
    const q = this.search.value.trim();
    if (n === 0) {
      this.count.textContent = q || this.starred.checked ? t("gallery.noMatch") : t("gallery.empty");
    } else {
      const count = t(this.hasMore ? "gallery.countMore" : "gallery.count", { count: n });
      this.count.textContent = q ? t("gallery.countMatching", { count, query: q }) : count;
    }
  }

  tile(item) {
    const label = item.prompt ? item.prompt.slice(0, 120) : t("viewer.imageNumber", { id: item.id });
    // The button is named by the image's text alternative: its prompt.
    const img = h("img", { src: item.thumb, alt: label, loading: "lazy", decoding: "async", width: 256, height: Math.round((256 * item.height) / item.width) || 256 });
    const button = h("button", { type: "button", class: "thumb", title: t("gallery.open", { id: item.id }), onclick: () => this.open(item.id) }, img);
    return h("li", { dataset: { id: item.id, starred: item.starred ? "true" : "false" } }, button,
      item.starred ? h("span", { class: "star-badge", "aria-hidden": "true" }, "★") : null);
  }

  open(id) {
    openViewer(id, { ids: this.items.map((i) => i.id), onChange: (change) => this.onChange(change) });
  }

  onChange({ type, id, starred }) {
    const li = this.grid.querySelector(`li[data-id="${id}"]`);
    if (type === "delete") {
      this.items = this.items.filter((i) => i.id !== id);
      this.offset = Math.max(0, this.offset - 1);
      li?.remove();
      this.showCount();
    } else if (type === "star" && li) {
      li.dataset.starred = String(starred);
      li.querySelector(".star-badge")?.remove();
      if (starred) li.append(h("span", { class: "star-badge", "aria-hidden": "true" }, "★"));
    }
  }
}
