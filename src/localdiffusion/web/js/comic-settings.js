// The comic editor's left column: the project (title, authors, reading direction), its pages (order,
// layout template, gutters and borders), the cast and the style that every panel shares.

import { api, cached } from "./api.js";
import { h, toast } from "./dom.js";
import { bound, labelled } from "./comic-form.js";

const MAX_SEED = 2 ** 32 - 1;
const SEED_HELP = "Shared description and seed: a character's description is repeated word for word in every panel they are in, "
  + "and with a fixed seed each of their panels starts from that seed and blends in only a little of the panel's own variation, "
  + "so the look holds while the picture changes.";
const REFERENCE_HELP = "Reference image: the picture is shown to the model through an IP-Adapter (at the style's reference "
  + "strength, about 0.5), so faces, clothes and colours follow it. It needs IP-Adapter weights in models/IP-Adapter.";

function details(title, open, ...children) {
  return h("details", { class: "group comic-section", open }, h("summary", {}, h("h2", {}, title)), ...children);
}

export class ProjectSettings {
  constructor(host) {
    this.host = host;
    this.pagesBody = h("div", { class: "comic-pages" });
    this.castBody = h("div", { class: "comic-cast" });
    this.notes = h("ul", { class: "hint consistency-notes", "aria-live": "polite" });
    this.projectBody = h("div");
    this.styleBody = h("div");
    this.el = h("div", { class: "comic-settings" },
      details("Pages", true, this.pagesBody),
      details("Project", false, this.projectBody),
      details("Cast", true, this.castBody),
      details("Style", false, this.styleBody));
  }

  get project() {
    return this.host.project;
  }

  render() {
    this.renderProject();
    this.renderPages();
    this.renderCast();
    this.renderStyle();
  }

  // --- project ---------------------------------------------------------------------------

  renderProject() {
    const p = this.project;
    const changed = (what) => () => this.host.changed(what);
    const authors = h("input", { value: p.authors.join(", "), placeholder: "Names, separated by commas" });
    authors.value = p.authors.join(", ");
    authors.addEventListener("input", () => {
      p.authors = authors.value.split(",").map((a) => a.trim()).filter(Boolean);
      this.host.changed("authors");
    });
    const direction = h("select", {}, h("option", { value: "ltr" }, "Left to right"), h("option", { value: "rtl" }, "Right to left (manga)"));
    direction.value = p.direction;
    direction.addEventListener("change", () => {
      p.direction = direction.value;
      this.host.changed("direction");
    });
    const size = p.page_size;
    this.projectBody.replaceChildren(
      labelled("Title", bound(p, "title", changed("title"), { id: "comic-title-input" })),
      labelled("Authors", authors),
      labelled("Reading direction", direction, "Panels and balloons are numbered and exported in this order."),
      h("p", { class: "hint" }, `Page: ${size.name} (${size.width_mm} × ${size.height_mm} mm), images at ${p.dpi} dpi.`));
  }

  // --- pages -----------------------------------------------------------------------------

  templateSelect(id, chosen) {
    const select = h("select", { id }, ...this.host.templates.map((t) => h("option", { value: t.name }, `${t.title} (${t.panels})`)));
    select.value = chosen || "grid-2x2";
    return select;
  }

  renderPages() {
    const p = this.project;
    const host = this.host;
    const list = h("ol", { class: "comic-page-list" }, ...p.pages.map((page, i) => {
      const current = i === host.pageIndex;
      return h("li", { class: current ? "current" : "" },
        h("button", { type: "button", class: "page-button", "aria-current": current ? "page" : null, onclick: () => host.showPage(i) },
          `Page ${i + 1}`, h("span", { class: "hint" }, ` ${page.panels.length} panel${page.panels.length === 1 ? "" : "s"}`)),
        h("button", { type: "button", class: "icon", "aria-label": `Move page ${i + 1} up`, disabled: i === 0, onclick: () => this.movePage(i, -1) }, "↑"),
        h("button", { type: "button", class: "icon", "aria-label": `Move page ${i + 1} down`, disabled: i === p.pages.length - 1, onclick: () => this.movePage(i, 1) }, "↓"),
        h("button", { type: "button", class: "icon danger", "aria-label": `Delete page ${i + 1}`, disabled: p.pages.length === 1, onclick: () => this.deletePage(i) }, "×"));
    }));
    const page = host.page();
    const layout = this.templateSelect("comic-template", page.template);
    const newLayout = this.templateSelect("comic-new-page-template", "grid-2x2");
    const gutter = h("input", { type: "number", id: "comic-gutter", min: 0, max: 30, step: 0.5, value: page.gutter_mm });
    gutter.value = page.gutter_mm;
    gutter.addEventListener("change", () => host.layout({ op: "gutter-width", width_mm: Number(gutter.value) }));
    const border = h("select", { id: "comic-border" }, h("option", { value: "solid" }, "Solid"), h("option", { value: "none" }, "None"));
    border.value = page.border.style;
    const borderWidth = h("input", { type: "number", id: "comic-border-width", min: 0, max: 5, step: 0.1 });
    borderWidth.value = page.border.width_mm;
    const colour = h("input", { type: "color", id: "comic-border-colour" });
    colour.value = page.border.color;
    const setBorder = () => {
      page.border = { style: border.value, width_mm: Number(borderWidth.value) || 0, color: colour.value };
      host.changed("border");
    };
    for (const el of [border, borderWidth, colour]) el.addEventListener("change", setBorder);
    this.pagesBody.replaceChildren(list,
      h("div", { class: "row" }, labelled("Layout of this page", layout),
        h("button", { type: "button", id: "comic-apply-template", onclick: () => host.layout({ op: "template", template: layout.value }) }, "Apply")),
      h("p", { class: "hint" }, "A new layout keeps the panels' content in reading order; it needs at least as many panels as the page has."),
      h("div", { class: "row" }, labelled("Gutter (mm)", gutter), labelled("Border", border),
        labelled("Border width (mm)", borderWidth), labelled("Border colour", colour)),
      h("div", { class: "row" }, labelled("New page", newLayout),
        h("button", { type: "button", id: "comic-add-page", onclick: () => host.layout({ op: "add-page", template: newLayout.value }) }, "Add page")));
  }

  movePage(i, delta) {
    const pages = this.project.pages;
    const [page] = pages.splice(i, 1);
    pages.splice(i + delta, 0, page);
    if (this.host.pageIndex === i) this.host.pageIndex = i + delta;
    else if (this.host.pageIndex === i + delta) this.host.pageIndex = i;
    this.renderPages();
    this.host.changed("pages");
  }

  deletePage(i) {
    if (!confirm(`Delete page ${i + 1} and everything on it?`)) return;
    this.project.pages.splice(i, 1);
    this.host.showPage(Math.min(this.host.pageIndex, this.project.pages.length - 1));
    this.host.changed("pages");
  }

  // --- cast ------------------------------------------------------------------------------

  renderCast() {
    const cast = this.project.characters;
    const cards = cast.map((character, i) => this.characterCard(character, i));
    this.castBody.replaceChildren(
      h("p", { class: "hint" }, SEED_HELP), h("p", { class: "hint" }, REFERENCE_HELP), this.notes,
      ...cards,
      h("button", { type: "button", id: "comic-add-character", onclick: () => this.addCharacter() }, "Add a character"));
    this.refreshNotes();
  }

  characterCard(character, i) {
    const host = this.host;
    const name = h("input", { required: true, maxlength: 80 });
    name.value = character.name;
    name.addEventListener("change", () => {
      const next = name.value.trim();
      if (!next || this.project.characters.some((c) => c !== character && c.name === next)) {
        toast(next ? `There is already a character named ${next}.` : "A character needs a name.");
        name.value = character.name;
        return;
      }
      for (const panel of this.project.pages.flatMap((p) => p.panels)) {
        panel.characters = panel.characters.map((n) => (n === character.name ? next : n));
        for (const b of panel.balloons) if (b.speaker === character.name) b.speaker = next;
      }
      character.name = next;
      host.changed("cast");
    });
    const description = bound(character, "description", () => host.changed("cast"), { rows: 2, placeholder: "short red hair, green raincoat, yellow boots" });
    const seed = bound(character, "seed", () => host.changed("cast"), { type: "number", min: 0, max: MAX_SEED, step: 1, nullable: true, placeholder: "none" });
    const randomSeed = h("button", { type: "button", onclick: () => {
      character.seed = Math.floor(Math.random() * MAX_SEED);
      seed.value = character.seed;
      host.changed("cast");
    } }, "Pick a seed");
    const file = h("input", { type: "file", accept: "image/png,image/jpeg,image/webp", "aria-label": `Reference image of ${character.name}` });
    file.addEventListener("change", () => this.uploadReference(character, file.files[0]));
    const reference = character.reference_image
      ? h("span", { class: "reference" }, h("img", { src: host.assetUrl(character.reference_image), alt: `Reference of ${character.name}` }),
        h("button", { type: "button", onclick: () => { character.reference_image = null; host.changed("cast"); this.renderCast(); } }, "Remove"))
      : file;
    return h("fieldset", { class: "character", dataset: { character: i } },
      h("legend", {}, character.name),
      labelled("Name", name), labelled("Description", description),
      h("div", { class: "row" }, labelled("Seed", seed), randomSeed),
      labelled("Reference image", reference),
      h("button", { type: "button", class: "danger", onclick: () => this.removeCharacter(character) }, `Remove ${character.name}`));
  }

  /** Out of the cast, and out of every panel and balloon that named them. */
  removeCharacter(character) {
    if (!confirm(`Remove ${character.name} from the cast and from every panel?`)) return;
    this.project.characters = this.project.characters.filter((c) => c !== character);
    for (const panel of this.project.pages.flatMap((p) => p.panels)) {
      panel.characters = panel.characters.filter((n) => n !== character.name);
      for (const b of panel.balloons) if (b.speaker === character.name) b.speaker = null;
    }
    this.renderCast();
    this.host.changed("cast");
  }

  addCharacter() {
    const names = new Set(this.project.characters.map((c) => c.name));
    let n = this.project.characters.length + 1;
    while (names.has(`Character ${n}`)) n += 1;
    this.project.characters.push({ name: `Character ${n}`, description: "", reference_image: null, seed: null });
    this.renderCast();
    this.host.changed("cast");
  }

  async uploadReference(character, file) {
    if (!file) return;
    try {
      await this.host.flush();
      const form = new FormData();
      form.append("file", file, file.name);
      const { ref } = await api.post(`/api/comics/${this.project.id}/assets`, form);
      character.reference_image = ref;
      this.renderCast();
      this.host.changed("cast");
    } catch (error) {
      toast(error.detail || String(error));
    }
  }

  /** The server's own sentences about what keeps this cast consistent (e.g. IP-Adapter weights missing). */
  async refreshNotes() {
    const panel = this.project.pages[0]?.panels[0];
    if (!panel || !this.project.characters.length) return this.notes.replaceChildren();
    try {
      await this.host.flush();
      const preview = await api.get(`/api/comics/${this.project.id}/panels/${panel.id}/prompt`);
      this.notes.replaceChildren(...preview.consistency.map((note) => h("li", {}, note)));
    } catch {
      this.notes.replaceChildren();
    }
  }

  // --- style -----------------------------------------------------------------------------

  async renderStyle() {
    const style = this.project.style;
    const host = this.host;
    const changed = () => host.changed("style");
    const model = h("select", { id: "comic-style-model" }, h("option", { value: "" }, "The default model"));
    const sampler = h("select", { id: "comic-style-sampler" });
    this.styleBody.replaceChildren(
      h("p", { class: "hint" }, "One look for every panel: the prefix starts each panel prompt, the suffix ends it."),
      labelled("Prompt prefix", bound(style, "prefix", changed, { rows: 2 })),
      labelled("Prompt suffix", bound(style, "suffix", changed, { rows: 1 })),
      labelled("Negative prompt", bound(style, "negative", changed, { rows: 2 })),
      labelled("Model", model), labelled("Sampler", sampler),
      h("div", { class: "row" },
        labelled("Steps", bound(style, "steps", changed, { type: "number", min: 1, max: 150, id: "comic-style-steps" })),
        labelled("CFG scale", bound(style, "cfg", changed, { type: "number", min: 0, max: 30, step: 0.5 }))),
      h("div", { class: "row" },
        labelled("Panel size (px side)", bound(style, "base_size", changed, { type: "number", min: 64, max: 2048, step: 8, nullable: true, placeholder: "model's own", id: "comic-style-size" })),
        labelled("Variation", bound(style, "variation_strength", changed, { type: "number", min: 0, max: 1, step: 0.05 })),
        labelled("Reference strength", bound(style, "reference_scale", changed, { type: "number", min: 0, max: 1.5, step: 0.05 }))),
      this.togetherPart());
    try {
      const [models, samplers] = await Promise.all([api.get("/api/models?kind=checkpoint"), cached("/api/samplers")]);
      model.append(...models.map((m) => h("option", { value: m.name }, m.family ? `${m.name} (${m.family})` : m.name)));
      model.value = style.model || "";
      sampler.append(...samplers.map((s) => h("option", { value: s.name }, s.name)));
      sampler.value = style.sampler;
    } catch (error) {
      toast(error.detail || String(error));
    }
    model.addEventListener("change", () => {
      style.model = model.value || null;
      changed();
    });
    sampler.addEventListener("change", () => {
      style.sampler = sampler.value;
      changed();
    });
  }

  /** Shared attention: every empty panel in one job, the first panel's look steering the others. */
  togetherPart() {
    const share = h("input", { type: "number", id: "comic-shared-share", min: 0.1, max: 1, step: 0.1, value: this.project.style.shared_attention || 0.5 });
    const status = h("p", { class: "hint", id: "comic-together-status", "aria-live": "polite" });
    const button = h("button", { type: "button", id: "comic-render-together" }, "Generate all empty panels together");
    const estimate = async () => {
      try {
        const { panels, kept_bytes: kept } = await api.get(`/api/comics/${this.project.id}/render?shared_attention=${Number(share.value) || 0.5}`);
        button.disabled = panels < 2;
        status.textContent = panels < 2
          ? "It needs at least two panels without an image."
          : `${panels} panels; the shared tokens will take about ${Math.max(1, Math.round(kept / 2 ** 20))} MiB of memory while they render.`;
      } catch (error) {
        status.textContent = error.detail || String(error);
      }
    };
    share.addEventListener("change", estimate);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await this.host.flush();
        const made = await api.post(`/api/comics/${this.project.id}/render`, { shared_attention: Number(share.value) });
        status.textContent = `Queued ${Object.keys(made.candidates).length} panels as one job.`;
        await this.host.refresh();
        this.host.watchPendingJobs();
      } catch (error) {
        status.textContent = error.detail || String(error);
        button.disabled = false;
      }
    });
    estimate();
    return h("div", { class: "group comic-together" },
      h("h3", {}, "Shared attention"),
      h("p", { class: "hint" }, "A third way to keep the cast alike (after StoryDiffusion): the empty panels are generated "
        + "in one go, and every panel after the first also looks at part of the first panel's image (the share) while it "
        + "is drawn, so faces, clothes and colours carry over. A higher share holds the look more tightly and takes more memory."),
      labelled("Share", share), button, status);
  }
}
