// The Library page (#/library): search the reference library by words and meaning, narrow by facets, read each
// entry (prompt with A1111's syntax highlighted, settings, source and licence) and use it on the Generate page.
// Also "prompts like yours" under the Generate page's prompt. Links out to online databases open only on a click;
// the studio itself never fetches them.

import { api } from "./api.js";
import { emit, h, toast } from "./dom.js";

const FACET_LABELS = { source: "Source", licence: "Licence", model: "Model", sampler: "Sampler", has_image: "Picture", size: "Size" };
const SETTING_LABELS = { steps: "Steps", cfg_scale: "CFG", sampler_name: "Sampler", scheduler: "Schedule", seed: "Seed",
  width: "Width", height: "Height", denoising_strength: "Denoise", clip_skip: "Clip skip" };
const ONLINE = [
  ["Lexica", (q) => `https://lexica.art/?q=${encodeURIComponent(q)}`],
  ["Civitai", (q) => `https://civitai.com/search/images?query=${encodeURIComponent(q)}`],
  ["PromptHero", (q) => `https://prompthero.com/search?q=${encodeURIComponent(q)}`],
  ["DiffusionDB explorer", () => "https://poloclub.github.io/diffusiondb/explorer/"],
];

// A1111 prompt syntax: extra networks <lora:x:0.8>, wildcards __name__, BREAK, weights (x:1.2), brackets, {a|b}.
const SYNTAX = /(<[^<>\n]+>|__[\w./-]+__|\bBREAK\b|:\s*-?\d+(?:\.\d+)?(?=\s*[)\]])|[()[\]{}|])/g;

/** The prompt as text nodes and spans a stylesheet colours (never as HTML: prompts are untrusted). */
export function highlightPrompt(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(SYNTAX)) {
    if (match.index > last) parts.push(text.slice(last, match.index));
    const token = match[0];
    const kind = token.startsWith("<") ? "network" : token.startsWith("__") ? "wildcard" : token === "BREAK" ? "break"
      : token.startsWith(":") ? "weight" : "bracket";
    parts.push(h("span", { class: `syn-${kind}` }, token));
    last = match.index + token.length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function settingsText(settings) {
  const pairs = Object.entries(settings || {}).filter(([key]) => key !== "width" && key !== "height");
  const size = settings?.width && settings?.height ? [`Size ${settings.width}×${settings.height}`] : [];
  return [...pairs.map(([key, value]) => `${SETTING_LABELS[key] || key} ${value}`), ...size].join(" · ");
}

function usePrompt(entry) {
  emit("use-recipe", { prompt: entry.prompt, negative_prompt: entry.negative_prompt || "" });
}

function useSettings(settings) {
  emit("use-recipe", { ...settings });
}

async function saveAsStyle(entry) {
  const name = window.prompt("Name of the new style:", entry.prompt.split(",")[0].slice(0, 40));
  if (!name) return;
  try {
    await api.post("/api/library/styles", { name, prompt: entry.prompt, negative_prompt: entry.negative_prompt || "" });
    toast(`Saved the style "${name}".`);
  } catch (error) {
    toast(error.detail);
  }
}

function card(entry, page) {
  const settings = settingsText(entry.settings);
  return h("article", { class: "library-card", dataset: { id: entry.id } },
    entry.thumb ? h("img", { class: "library-thumb", src: entry.thumb, alt: "", loading: "lazy" }) : null,
    h("div", { class: "library-body" },
      h("p", { class: "library-prompt" }, highlightPrompt(entry.prompt)),
      entry.negative_prompt ? h("p", { class: "library-negative" }, h("span", { class: "label" }, "Negative: "), highlightPrompt(entry.negative_prompt)) : null,
      settings ? h("p", { class: "library-settings" }, settings) : null,
      h("p", { class: "library-source" },
        `${entry.source} · ${entry.licence || "licence unknown"}`,
        /^https?:\/\//i.test(entry.url || "") ? [" · ", h("a", { href: entry.url, target: "_blank", rel: "noopener noreferrer" }, "its page")] : null),
      h("div", { class: "library-actions" },
        h("button", { type: "button", onclick: () => usePrompt(entry) }, "Use this prompt"),
        Object.keys(entry.settings || {}).length
          ? h("button", { type: "button", onclick: () => useSettings(entry.settings) }, "Use these settings") : null,
        h("button", { type: "button", dataset: { manages: "" }, onclick: () => saveAsStyle(entry) }, "Save as style"),
        h("button", { type: "button", onclick: () => page.moreLike(entry) }, "More like this"))));
}

class LibraryPage {
  constructor(section) {
    this.section = section;
    this.filters = {};
    this.query = h("input", { type: "search", id: "library-q", name: "q", placeholder: "a lighthouse in a storm, dramatic light", autocomplete: "off" });
    this.semantic = h("input", { type: "checkbox", id: "library-semantic", checked: true });
    this.facets = h("div", { class: "library-facets", role: "group", "aria-label": "Narrow the results" });
    this.results = h("div", { class: "library-results", "aria-live": "polite" });
    this.status = h("p", { class: "library-status" });
    this.links = h("p", { class: "library-links" });
    this.sources = h("p", { class: "library-sources" });
    const form = h("form", { class: "library-search", role: "search" },
      h("label", { for: "library-q" }, "Search the library"), this.query,
      h("label", { class: "check" }, this.semantic, " By meaning too"),
      h("button", { type: "submit", class: "primary" }, "Search"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.filters = {};
      this.search();
    });
    this.file = h("input", { type: "file", id: "library-file", accept: ".parquet,.csv,.json,.txt" });
    const importForm = h("details", { class: "group more library-import" }, h("summary", {}, "Import into the library"),
      h("p", {}, "A DiffusionDB metadata parquet, a styles.csv, a Fooocus style JSON, a prompt list (TXT, CSV) or a saved Civitai answer. ",
        "Folders (images, wildcards) import from the command line: localdiffusion library import FOLDER."),
      h("label", { for: "library-file" }, "File"), this.file,
      h("button", { type: "button", onclick: () => this.importFile() }, "Import"));
    section.append(h("h2", { id: "library-title" }, "Library"), form, this.links, this.status,
      h("div", { class: "library-layout" }, this.facets, this.results), this.sources, importForm);
  }

  async show() {
    if (!this.loaded) {
      this.loaded = true;
      await Promise.all([this.search(), this.showSources()]);
    }
  }

  async showSources() {
    const sources = await api.get("/api/library/sources");
    this.sources.textContent = sources.length
      ? `Sources: ${sources.map((s) => `${s.name} (${s.entries} entries, ${s.licence || "licence unknown"})`).join("; ")}.`
      : "The library is empty: import DiffusionDB's metadata, a styles.csv or your own pictures (see the README).";
  }

  params() {
    const params = new URLSearchParams({ q: this.query.value, limit: "30" });
    if (this.semantic.checked && this.query.value.trim()) params.set("semantic", "true");
    for (const [key, value] of Object.entries(this.filters)) params.set(key, value);
    return params;
  }

  async search() {
    const q = this.query.value.trim();
    this.links.replaceChildren(...(q ? ["Search this on: ", ...ONLINE.flatMap(([name, url], i) =>
      [i ? " · " : "", h("a", { href: url(q), target: "_blank", rel: "noopener noreferrer" }, name)])] : []));
    try {
      const found = await api.get(`/api/library/search?${this.params()}`);
      this.render(found.entries, found.facets);
    } catch (error) {
      this.status.textContent = error.detail;
    }
  }

  async moreLike(entry) {
    const found = await api.get(`/api/library/similar?id=${entry.id}&count=20`);
    this.render(found.entries, {}, `More like “${entry.prompt.slice(0, 60)}”`);
  }

  render(entries, facets, heading) {
    this.status.textContent = heading || (entries.length ? `${entries.length} entries` : "Nothing in the library matches.");
    this.results.replaceChildren(...entries.map((entry) => card(entry, this)));
    this.facets.replaceChildren(...Object.entries(facets || {}).filter(([, values]) => values.length).map(([name, values]) =>
      h("fieldset", { class: "library-facet" }, h("legend", {}, FACET_LABELS[name] || name),
        ...values.slice(0, 8).map(({ value, count }) => {
          const text = name === "has_image" ? (value ? "with a picture" : "text only") : String(value);
          const pressed = String(this.filters[name]) === String(value);
          return h("button", { type: "button", class: "facet", "aria-pressed": String(pressed), onclick: () => {
            if (pressed) delete this.filters[name];
            else this.filters[name] = value;
            this.search();
          } }, `${text} (${count})`);
        }))));
  }

  async importFile() {
    const file = this.file.files[0];
    if (!file) return toast("Choose a file to import first.");
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const result = await api.post("/api/library/imports", form);
      toast(`Imported ${result.added} new entries into ${result.source}.`);
      await Promise.all([this.search(), this.showSources()]);
    } catch (error) {
      toast(error.detail);
    }
  }
}

export function initLibrary(section) {
  return new LibraryPage(section);
}

/** "Prompts like yours" under the Generate page's prompt: the five nearest library entries as one types (debounced),
 * and the typical CFG, steps, sampler and size among the nearest 100 with settings, each one click away. */
export function installPromptsLikeYours(textarea, fill) {
  const list = h("ul", { class: "like-yours-list" });
  const typical = h("div", { class: "like-yours-typical" });
  const panel = h("details", { class: "like-yours", hidden: true, open: true },
    h("summary", {}, "Prompts like yours"), list, typical);
  (textarea.closest(".field") || textarea).after(panel);
  let timer = 0;
  let asked = "";
  textarea.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const prompt = textarea.value.trim();
      if (prompt === asked) return;
      asked = prompt;
      if (prompt.length < 3) {
        panel.hidden = true;
        return;
      }
      let found;
      try {
        found = await api.get(`/api/library/similar?${new URLSearchParams({ prompt })}`);
      } catch {
        panel.hidden = true;
        return;
      }
      if (asked !== prompt) return;
      panel.hidden = !found.entries.length;
      list.replaceChildren(...found.entries.map((entry) => h("li", {},
        h("button", { type: "button", class: "link", title: "Use this prompt",
          onclick: () => fill({ prompt: entry.prompt, negative_prompt: entry.negative_prompt || "" }) }, entry.prompt),
        h("span", { class: "muted" }, ` (${entry.source})`))));
      const t = found.typical || {};
      const buttons = [];
      if (t.cfg_scale !== undefined) buttons.push(h("button", { type: "button", onclick: () => fill({ cfg_scale: t.cfg_scale }) }, `CFG ${t.cfg_scale}`));
      if (t.steps !== undefined) buttons.push(h("button", { type: "button", onclick: () => fill({ steps: t.steps }) }, `${t.steps} steps`));
      if (t.sampler_name) buttons.push(h("button", { type: "button", onclick: () => fill({ sampler_name: t.sampler_name }) }, t.sampler_name));
      if (t.width && t.height) buttons.push(h("button", { type: "button", onclick: () => fill({ width: t.width, height: t.height }) }, `${t.width}×${t.height}`));
      typical.replaceChildren(...(buttons.length ? [h("span", {}, `What people used (${found.based_on} similar prompts): `), ...buttons] : []));
    }, 350);
  });
}
