// The Comic page: a list of comic projects, and the editor of one (pages, panels, cast, style, lettering,
// export). The project is edited here as the JSON of comic.Project and saved whole (PUT); the server
// does the layout geometry (/layout), queues panel candidates as jobs and renders the exports.
// Every change is sent with the project's `version` as this tab last had it: when someone saved in between
// (another tab, another person) the server answers 409, and the editor says so and offers to reload
// instead of overwriting their edit.

import { api, cached, request } from "./api.js";
import { h, emit, formatBytes, needsLargerScreen, toast } from "./dom.js";
import { t } from "./i18n.js";
import { openViewer } from "./viewer.js";
import { PageEditor } from "./comic-page.js";
import { PanelSidebar } from "./comic-panel.js";
import { ProjectSettings } from "./comic-settings.js";
import { labelled, newId } from "./comic-form.js";
import { ClassComicBar } from "./comic-class.js";

const BASE = "/api/comics";
const AUTOSAVE_MS = 800;
const CONFLICT = 409;

/** The project's JSON without what the server changes on its own (the version, candidates and the picked
 * one, as finished jobs come in): equal for two copies when nobody else edited in between. */
function edits(project) {
  return JSON.stringify(project, (key, value) => (["version", "candidates", "chosen"].includes(key) ? undefined : value));
}
const PAGE_SIZES = [["A4", "A4 (210 × 297 mm)"], ["Letter", "US Letter (8.5 × 11 in)"], ["square", "Square (210 × 210 mm)"], ["custom", "Custom…"]];

export async function initComic(section) {
  const templates = await cached(`${BASE}/templates`);
  return new ComicPage(section, templates);
}

class ComicPage {
  constructor(section, templates) {
    this.section = section;
    this.templates = templates;
    this.project = null;
    this.pageIndex = 0;
    this.selection = { panel: null, balloon: null };
    this.dirty = false;
    this.conflict = false; // a save was refused as stale: nothing more is sent until the person reloads
    this.lastSaved = null; // the server's copy as this tab last saved or read it
    this.saving = Promise.resolve();
    this.listView = h("div", { class: "comic-list" });
    this.editorView = h("div", { class: "comic-editor", hidden: true });
    section.append(needsLargerScreen(t("editor.comicNeedsRoom")), this.listView, this.editorView);
    this.buildEditor();
    // Autosave waits a moment after each change; closing the tab within that moment asks first.
    window.addEventListener("beforeunload", (event) => {
      if (this.dirty) event.preventDefault();
    });
  }

  /** Called on every visit: #/comic lists the projects, #/comic/<id> opens one. */
  async show() {
    const id = location.hash.replace(/^#\/?/, "").split("/")[1];
    if (id && id !== this.project?.id) await this.open(id);
    else if (!id) await this.showList();
  }

  // --- the project list ------------------------------------------------------------------

  async showList() {
    await this.flush();
    this.project = null;
    this.editorView.hidden = true;
    this.listView.hidden = false;
    let projects = [];
    await this.classBar.who();
    try {
      projects = await api.get(BASE);
    } catch (error) {
      toast(error.detail);
    }
    const items = projects.map((p) => h("li", {},
      h("a", { href: `#/comic/${p.id}`, class: "comic-link" }, p.title),
      h("span", { class: "hint" }, ` ${p.pages} page${p.pages === 1 ? "" : "s"}, ${p.panels} panel${p.panels === 1 ? "" : "s"}${p.authors.length ? ` · ${p.authors.join(", ")}` : ""}${p.class_comic ? " · class comic" : ""}`)));
    this.listView.replaceChildren(
      h("h1", {}, "Comics"),
      h("p", { class: "hint" }, "Lay out pages of panels, describe the cast once, generate each panel and letter it; export a PDF, a CBZ or PNG pages."),
      items.length ? h("ul", { class: "comic-projects" }, ...items) : h("p", { class: "empty" }, "No comics yet: start one below."),
      this.newProjectForm());
  }

  newProjectForm() {
    const title = h("input", { id: "comic-new-title", name: "title", required: true, value: "My comic" });
    title.value = "My comic";
    const authors = h("input", { id: "comic-new-authors", name: "authors", placeholder: "Names, separated by commas" });
    const size = h("select", { id: "comic-new-page", name: "page" }, ...PAGE_SIZES.map(([v, t]) => h("option", { value: v }, t)));
    const width = h("input", { type: "number", name: "width", min: 50, step: 1, value: 180, "aria-label": "Custom width" });
    const height = h("input", { type: "number", name: "height", min: 50, step: 1, value: 260, "aria-label": "Custom height" });
    const unit = h("select", { name: "unit", "aria-label": "Unit" }, h("option", { value: "mm" }, "mm"), h("option", { value: "in" }, "in"));
    const custom = h("span", { class: "row", hidden: true }, width, "×", height, unit);
    size.addEventListener("change", () => { custom.hidden = size.value !== "custom"; });
    const direction = h("select", { id: "comic-new-direction", name: "direction" },
      h("option", { value: "ltr" }, "Left to right"), h("option", { value: "rtl" }, "Right to left (manga)"));
    const template = h("select", { id: "comic-new-template", name: "template" },
      ...this.templates.map((t) => h("option", { value: t.name, selected: t.name === "grid-2x2" }, `${t.title} (${t.panels})`)));
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const forClass = h("input", { type: "checkbox", id: "comic-new-class", name: "class" });
    const form = h("form", { class: "comic-new", "aria-labelledby": "comic-new-title-h" },
      h("h2", { id: "comic-new-title-h" }, "New comic"),
      labelled("Title", title), labelled("Authors", authors),
      h("div", { class: "row" }, labelled("Page size", size), custom),
      h("div", { class: "row" }, labelled("Reading direction", direction), labelled("First page layout", template)),
      this.classBar.me?.role === "facilitator"
        ? h("label", { class: "check", for: "comic-new-class" }, forClass, " A class comic: everyone in the class opens it, and you assign its panels") : null,
      h("button", { type: "submit", class: "primary" }, "Create comic"), error);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const body = {
        title: title.value.trim() || "Untitled comic",
        authors: authors.value.split(",").map((a) => a.trim()).filter(Boolean),
        page: size.value, direction: direction.value, template: template.value,
      };
      if (forClass.checked) body.class = true;
      if (size.value === "custom") Object.assign(body, { width: Number(width.value), height: Number(height.value), unit: unit.value });
      try {
        const project = await api.post(BASE, body);
        location.hash = `#/comic/${project.id}`;
      } catch (e) {
        error.textContent = e.detail || String(e);
        error.hidden = false;
      }
    });
    return form;
  }

  // --- the editor ------------------------------------------------------------------------

  buildEditor() {
    this.titleEl = h("h1", { class: "comic-title" });
    this.saveState = h("span", { class: "save-state", role: "status", "aria-live": "polite" });
    this.conflictText = h("span", { class: "form-error" });
    this.conflictEl = h("div", { class: "row comic-conflict", role: "alert", hidden: true }, this.conflictText,
      h("button", { type: "button", class: "primary", id: "comic-reload", onclick: () => this.reload() }, "Reload the comic"));
    const exportButton = (fmt, label, title) => h("button", { type: "button", dataset: { export: fmt }, title,
      onclick: () => this.download(fmt) }, label);
    const toolbar = h("div", { class: "toolbar comic-toolbar" },
      h("a", { href: "#/comic", class: "button" }, "‹ All comics"), this.titleEl, this.saveState,
      h("button", { type: "button", class: "primary", id: "comic-save", onclick: () => this.saveNow(true) }, "Save"),
      h("span", { class: "export-group", role: "group", "aria-label": "Export" },
        exportButton("pdf", "PDF for print", "Pictures at the project's dpi, lossless: for a print shop."),
        exportButton("pdf-screen", "PDF for screen", "Pictures at 150 dpi as JPEG: a much smaller file, to read or send."),
        exportButton("cbz", "Export CBZ"), exportButton("png", "Page as PNG"),
        exportButton("ldcomic", "Project archive"),
        h("button", { type: "button", id: "comic-preview", onclick: () => this.preview() }, "Preview as printed")));
    this.settings = new ProjectSettings(this);
    this.editor = new PageEditor({
      assetUrl: (ref) => this.assetUrl(ref),
      onSelect: (selection) => this.select(selection, false),
      onChange: (what) => this.changed(what, false),
      onLayout: (op) => this.layout(op),
      onDropCandidate: (panelId, data) => this.dropCandidate(panelId, data),
    });
    this.sidebar = new PanelSidebar(this);
    this.classBar = new ClassComicBar(this);
    this.editorView.append(toolbar, this.classBar.el, this.conflictEl, h("div", { class: "comic-workspace" },
      h("div", { class: "comic-left" }, this.settings.el),
      h("div", { class: "comic-center" }, this.editor.el,
        h("p", { class: "hint" }, "Click a panel to select it. Drag the round handles to move a gutter (hold Shift to slant it), drag inside a selected panel to pan its image and use the wheel to zoom. Double-click a balloon to type in it.")),
      h("aside", { class: "comic-right", "aria-label": "Panel" }, this.sidebar.el)));
  }

  async open(id) {
    await this.flush();
    try {
      this.project = await api.get(`${BASE}/${id}`);
    } catch (error) {
      toast(error.detail);
      location.hash = "#/comic";
      return;
    }
    this.lastSaved = structuredClone(this.project);
    this.pageIndex = 0;
    this.selection = { panel: this.page()?.panels[0]?.id || null, balloon: null };
    this.dirty = false;
    this.conflict = false;
    this.conflictEl.hidden = true;
    this.listView.hidden = true;
    this.editorView.hidden = false;
    this.setSaveState("Saved.");
    this.renderAll();
    this.watchPendingJobs();
    await this.classBar.opened(this.project);
  }

  /** Candidates still generating (say, after a reload) report back when their jobs end, whichever panel shows. */
  watchPendingJobs() {
    for (const panel of this.project.pages.flatMap((p) => p.panels)) {
      for (const c of panel.candidates) if (!c.image && c.job_id !== null && !c.error) this.sidebar.jobCard(c);
    }
  }

  page() {
    return this.project?.pages[this.pageIndex] || null;
  }

  panel() {
    return this.page()?.panels.find((p) => p.id === this.selection.panel) || null;
  }

  assetUrl(ref) {
    return `${BASE}/${this.project.id}/assets/${encodeURIComponent(ref.replace(/^assets\//, ""))}`;
  }

  renderAll() {
    this.titleEl.textContent = this.project.title;
    this.settings.render();
    this.renderPage();
  }

  renderPage() {
    this.classBar.render();
    if (!this.panel()) this.selection = { panel: this.page()?.panels[0]?.id || null, balloon: null };
    this.editor.show(this.project, this.page(), this.selection);
    this.sidebar.render();
  }

  select(selection, redraw = true) {
    this.selection = { ...selection };
    if (redraw) this.editor.show(this.project, this.page(), this.selection);
    this.sidebar.render();
  }

  showPage(index) {
    this.pageIndex = Math.max(0, Math.min(index, this.project.pages.length - 1));
    this.selection = { panel: this.page().panels[0]?.id || null, balloon: null };
    this.settings.renderPages();
    this.renderPage();
  }

  // --- saving ----------------------------------------------------------------------------

  /** Something in the project changed: redraw what shows it and save a moment later. */
  changed(what, redraw = true) {
    this.dirty = true;
    this.setSaveState("Unsaved changes…");
    if (what === "title") this.titleEl.textContent = this.project.title;
    if (redraw) this.editor.show(this.project, this.page(), this.selection);
    // Typing, dragging and sliding must not rebuild the sidebar under the user's hand.
    if (what === "view") this.sidebar.syncView();
    else if (what === "text" || what === "prompt") {
      this.sidebar.refreshPrompt();
      if (what === "text") this.sidebar.refreshBalloons();
    }
    else this.sidebar.render();
    clearTimeout(this.autosaveTimer);
    this.autosaveTimer = setTimeout(() => this.saveNow(), AUTOSAVE_MS);
  }

  setSaveState(text) {
    this.saveState.textContent = text;
  }

  /** Save the project now (saves run one after the other, never two at once). */
  saveNow(announce = false) {
    clearTimeout(this.autosaveTimer);
    const project = this.project;
    this.saving = this.saving.then(async () => {
      if (!project || project !== this.project || this.conflict || (!this.dirty && !announce)) return;
      this.dirty = false;
      this.setSaveState("Saving…");
      try {
        // a participant on a class comic saves their own panels, one by one; everyone else the whole comic
        const saved = this.classBar.whole(project) ? await request("PUT", `${BASE}/${project.id}`, project)
          : await this.classBar.savePanels(project, this.lastSaved);
        if (saved) {
          project.version = saved.version;
          this.lastSaved = saved;
        }
        if (!this.dirty) this.setSaveState("Saved.");
        if (announce) toast("Comic saved.");
      } catch (error) {
        this.dirty = true;
        if (!this.refused(error)) {
          this.setSaveState(`Not saved: ${error.detail}`);
          toast(error.detail);
        }
      }
    });
    return this.saving;
  }

  /** A change the server refused because the comic moved on since this tab read it: say so, keep what was
   * edited on the screen (unsaved) and offer to reload. True when `error` was that. */
  refused(error) {
    if (error?.status !== CONFLICT) return false;
    this.conflict = true;
    this.setSaveState(`Not saved: ${error.detail}`);
    this.conflictText.textContent = error.detail;
    this.conflictEl.hidden = false;
    return true;
  }

  /** Drop this tab's unsaved edits and open the comic as it is saved now. */
  async reload() {
    const id = this.project?.id;
    this.dirty = false;
    this.conflict = false;
    this.project = null;
    if (id) await this.open(id);
  }

  async flush() {
    if (this.dirty) await this.saveNow();
    await this.saving;
  }

  /** The server's copy (with the images of finished candidate jobs), merged into what is being edited. When
   * someone else edited meanwhile and this tab has nothing unsaved, their copy is shown instead. */
  async refresh() {
    const project = this.project;
    if (!project) return;
    await this.flush();
    if (this.conflict) return;
    const fresh = await api.get(`${BASE}/${project.id}`);
    if (project !== this.project) return; // another project was opened meanwhile
    const onlyJobs = edits(fresh) === edits(this.lastSaved);
    // (a participant on a class comic takes the class's copy whenever nothing of theirs is unsaved)
    if ((!onlyJobs || !this.classBar.whole(project)) && !this.dirty) {
      this.project = fresh;
      this.lastSaved = structuredClone(fresh);
      this.settings.render();
      this.renderPage();
      return;
    }
    if (onlyJobs) { // only finished candidates came in: this tab's copy is at the new version too
      project.version = fresh.version;
      this.lastSaved = structuredClone(fresh);
    }
    const panels = new Map(fresh.pages.flatMap((page) => page.panels.map((p) => [p.id, p])));
    for (const page of this.project.pages) {
      for (const panel of page.panels) {
        const theirs = panels.get(panel.id);
        if (!theirs) continue;
        const byId = new Map(theirs.candidates.map((c) => [c.id, c]));
        panel.candidates = [...panel.candidates.map((c) => byId.get(c.id) || c),
          ...theirs.candidates.filter((c) => !panel.candidates.some((mine) => mine.id === c.id))];
        if (!panel.candidates.some((c) => c.id === panel.chosen && c.image)) panel.chosen = theirs.chosen;
      }
    }
    this.renderPage();
  }

  // --- server operations -----------------------------------------------------------------

  /** A layout edit (template, split, merge, gutter, slant, gutter width, new page) done by the server. */
  async layout(op) {
    try {
      await this.flush();
      const pageId = this.page().id;
      const project = await api.post(`${BASE}/${this.project.id}/layout`, { page: pageId, ...op, version: this.project.version });
      this.project = project;
      this.lastSaved = structuredClone(project);
      if (op.op === "add-page") this.pageIndex = project.pages.findIndex((p) => p.id === pageId) + 1;
      this.settings.render();
      this.renderPage();
      return true;
    } catch (error) {
      if (!this.refused(error)) toast(error.detail || String(error));
      this.renderPage();
      return false;
    }
  }

  async generate(panel, count) {
    try {
      await this.flush();
      if (this.conflict) return;
      const project = this.project;
      const made = await api.post(`${BASE}/${project.id}/panels/${panel.id}/generate`, { candidates: count, version: project.version });
      project.version += 1; // the server saved the queued candidates: one change
      panel.candidates.push(...made);
      this.sidebar.render();
    } catch (error) {
      if (!this.refused(error)) this.sidebar.showError(error);
    }
  }

  dropCandidate(panelId, { candidate }) {
    const panel = this.page().panels.find((p) => p.id === panelId);
    if (!panel || !candidate?.image) return;
    let placed = panel.candidates.find((c) => c.image === candidate.image);
    if (!placed) {
      placed = { ...candidate, id: newId() };
      panel.candidates.push(placed);
    }
    panel.chosen = placed.id;
    panel.view = { fit: "cover", zoom: 1, x: 0.5, y: 0.5 };
    this.selection = { panel: panelId, balloon: null };
    this.changed("candidate");
  }

  async sendToInpaint(candidate) {
    try {
      const blob = await api.blob(this.assetUrl(candidate.image));
      emit("send-to", { mode: "inpaint", blob, name: `${candidate.id}.png`, recipe: candidate.recipe });
    } catch (error) {
      toast(error.detail);
    }
  }

  /** The candidate's gallery image in the viewer, where its explanation ("why does it look like this?") lives. */
  async explain(candidate) {
    try {
      const job = await api.get(`/api/jobs/${candidate.job_id}`);
      const id = job.result?.images?.[candidate.job_index || 0];
      if (id === undefined) throw new Error("This image is no longer in the gallery.");
      openViewer(id);
    } catch (error) {
      toast(error.detail || error.message);
    }
  }

  /** The server's own render of this page (what the exports contain), beside the editor's approximation. */
  async preview() {
    await this.flush();
    const src = `${BASE}/${this.project.id}/export/png?page=${this.pageIndex + 1}&t=${Date.now()}`;
    const dialog = h("dialog", { class: "viewer comic-preview", "aria-label": "The page as printed" },
      h("div", { class: "viewer-head" }, h("h2", {}, `Page ${this.pageIndex + 1} as printed`),
        h("button", { type: "button", class: "close", "aria-label": "Close", onclick: () => dialog.close() }, "×")),
      h("figure", { class: "viewer-image" }, h("img", { src, alt: `Page ${this.pageIndex + 1} as the export draws it` })));
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
  }

  /** Fetch the export first, so that a refusal shows as a sentence rather than a downloaded error file, and
   * the file's size shows before it is saved (a print PDF can be tens of megabytes). */
  async download(fmt) {
    await this.flush();
    const page = this.pageIndex + 1;
    const [kind, query] = {
      pdf: ["pdf", "?quality=print"], "pdf-screen": ["pdf", "?quality=screen"], png: ["png", `?page=${page}`],
    }[fmt] || [fmt, ""];
    const slug = this.project.title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "comic";
    const name = { png: `${slug}-page-${page}.png`, pdf: `${slug}.pdf`, "pdf-screen": `${slug}-screen.pdf` }[fmt] || `${slug}.${kind}`;
    const button = this.editorView.querySelector(`[data-export="${fmt}"]`);
    button?.setAttribute("aria-busy", "true");
    try {
      const blob = await api.blob(`${BASE}/${this.project.id}/export/${kind}${query}`);
      this.offerDownload(blob, name, fmt);
    } catch (error) {
      toast(error.detail || String(error));
    } finally {
      button?.removeAttribute("aria-busy");
    }
  }

  /** A small dialog: the file's name and size, Save (the browser's download) or Close. */
  offerDownload(blob, name, fmt) {
    const url = URL.createObjectURL(blob);
    const size = formatBytes(blob.size);
    const save = h("a", { href: url, download: name, class: "button primary", id: "comic-export-save" }, `Save (${size})`);
    const hint = fmt === "pdf" ? h("p", { class: "hint" }, "To read on a screen or send by mail, “PDF for screen” makes a much smaller file.") : null;
    const dialog = h("dialog", { class: "export-ready", "aria-labelledby": "comic-export-title" },
      h("h2", { id: "comic-export-title" }, "Your export is ready"),
      h("p", { id: "comic-export-size" }, `${name}: ${size}`),
      hint,
      h("div", { class: "row" }, save, h("button", { type: "button", onclick: () => dialog.close() }, "Close")));
    save.addEventListener("click", () => setTimeout(() => dialog.close(), 0));
    dialog.addEventListener("close", () => {
      dialog.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    });
    document.body.append(dialog);
    dialog.showModal();
    save.focus();
  }
}

