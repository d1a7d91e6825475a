// The Models page: what the library holds (with each model's licence and source where it can be known),
// well-known public checkpoints to download in one click, adding a model by its path, and rescanning.

import { api } from "./api.js";
import { h, emit, formatBytes } from "./dom.js";

const KIND_NAMES = { checkpoint: "Checkpoint", lora: "LoRA", embedding: "Embedding", vae: "VAE", controlnet: "ControlNet", upscaler: "Upscaler" };

export function initModels(section) {
  return new ModelsPage(section);
}

class ModelsPage {
  constructor(section) {
    this.section = section;
    this.build();
  }

  build() {
    this.path = h("input", { type: "text", id: "model-path", name: "path", required: true, autocomplete: "off", spellcheck: false,
      placeholder: "/home/me/models/my-model.safetensors", "aria-describedby": "model-path-hint" });
    this.message = h("p", { class: "form-message", role: "status", "aria-live": "polite" });
    this.addButton = h("button", { type: "submit", class: "primary" }, "Add model");
    const form = h("form", { class: "add-model", onsubmit: (event) => {
      event.preventDefault();
      this.add();
    } },
    h("label", { for: "model-path" }, "Path of a model file or diffusers folder on this computer"),
    h("div", { class: "row" }, this.path, this.addButton),
    h("p", { class: "hint", id: "model-path-hint" }, "The model is read where it is; nothing is copied. Safetensors files and diffusers folders work."),
    this.message);
    this.rescanButton = h("button", { type: "button", onclick: () => this.rescan() }, "Rescan folders");
    this.help = h("p", { class: "hint help-text" });
    this.table = h("table", { class: "models" },
      h("caption", { class: "visually-hidden" }, "Models in the library"),
      h("thead", {}, h("tr", {}, ...["Name", "Kind", "Family", "Format", "Hash", "Size", "Licence", "Source"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody"));
    this.empty = h("p", { class: "empty", hidden: true }, "No models yet.");
    this.offers = h("div", { class: "model-offers" });
    this.section.append(
      h("div", { class: "toolbar" }, this.rescanButton),
      // On a phone the table scrolls sideways inside this region, which a keyboard can focus and scroll.
      h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Models (scrolls sideways)" }, this.table), this.empty,
      h("h2", {}, "Get a public model"), this.offers,
      h("h2", {}, "Add a model"), form, this.help);
  }

  async show() {
    try {
      const [models, status] = await Promise.all([api.get("/api/models"), api.get("/api/status")]);
      this.render(models);
      this.help.textContent = status.add_models_help.replaceAll("`", "");
      await renderOffers(this.offers, () => this.show());
    } catch (error) {
      this.message.textContent = error.detail;
    }
  }

  render(models) {
    const sorted = [...models].sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name));
    this.table.tBodies[0].replaceChildren(...sorted.map((m) => h("tr", {},
      h("th", { scope: "row" }, m.name),
      h("td", {}, KIND_NAMES[m.kind] || m.kind),
      h("td", {}, m.family),
      h("td", {}, m.format),
      h("td", { class: "mono" }, m.short_hash || "—"),
      h("td", { class: "num" }, formatBytes(m.size)),
      h("td", { title: m.provenance?.stated_by === "metadata" ? "as the file's own metadata states it" : "" }, m.provenance?.licence || "unknown"),
      h("td", {}, m.provenance?.source ? h("a", { href: m.provenance.source, target: "_blank", rel: "noopener noreferrer" }, "source") : "unknown"))));
    this.empty.hidden = models.length > 0;
  }

  async add() {
    const path = this.path.value.trim();
    if (!path) {
      this.message.textContent = "Type the path of a model file or folder first.";
      return;
    }
    this.addButton.disabled = true;
    this.message.textContent = "Adding…";
    try {
      const model = await api.post("/api/models", { path });
      this.message.textContent = `Added ${model.name} (${model.family}).`;
      this.path.value = "";
      this.path.removeAttribute("aria-invalid");
      await this.show();
      emit("models-changed");
    } catch (error) {
      this.message.textContent = error.detail;
      this.path.setAttribute("aria-invalid", "true");
    } finally {
      this.addButton.disabled = false;
    }
  }

  async rescan() {
    this.rescanButton.disabled = true;
    this.message.textContent = "Rescanning…";
    try {
      this.render(await api.post("/api/models/rescan"));
      this.message.textContent = "The model folders were scanned again.";
      emit("models-changed");
    } catch (error) {
      this.message.textContent = error.detail;
    } finally {
      this.rescanButton.disabled = false;
    }
  }
}

// Well-known public checkpoints (GET /api/models/known) that fit this machine, each with its size, licence,
// needs and what it is good for; one click downloads it (the only time the studio uses the network), with a
// progress bar, and the model appears in the library when its SHA-256 checks out. Also used by the empty
// Generate page. `onDone` runs when a download finishes.
export async function renderOffers(box, onDone) {
  const known = await api.get("/api/models/known");
  const offers = known.models.filter((m) => m.fits && m.downloadable && !m.present);
  const where = known.machine.vram_gb ? `a GPU with ${known.machine.vram_gb} GB` : `a CPU with ${known.machine.ram_gb} GB of memory`;
  box.replaceChildren(
    h("p", { class: "hint" }, offers.length ? `These public models fit this computer (${where}). Downloading uses the network once; the file is checked against its published SHA-256.`
      : `No other public model in the table fits this computer (${where}), or they are all here already.`),
    ...offers.map((m) => offerCard(m, onDone)));
}

function offerCard(m, onDone) {
  const bar = h("progress", { max: 100, value: 0, hidden: true, "aria-label": `Download of ${m.name}` });
  const note = h("p", { class: "offer-message", role: "status", "aria-live": "polite" });
  const button = h("button", { type: "button", class: "primary" }, `Download ${m.name}`);
  const follow = async () => {
    const items = await api.get("/api/models/downloads");
    const item = items.find((d) => d.id === m.id);
    if (!item) return;
    if (item.total) {
      bar.hidden = false;
      bar.value = Math.round((100 * item.done) / item.total);
    }
    if (item.state === "running") {
      note.textContent = `Downloading… ${formatBytes(item.done)}${item.total ? ` of ${formatBytes(item.total)}` : ""}`;
      setTimeout(follow, 500);
    } else if (item.state === "done") {
      note.textContent = `${m.name} is in the library as ${item.model}.`;
      emit("models-changed");
      if (onDone) onDone();
    } else {
      note.textContent = item.detail;
      button.disabled = false;
    }
  };
  button.addEventListener("click", async () => {
    button.disabled = true;
    note.textContent = "Starting the download…";
    try {
      await api.post("/api/models/downloads", { id: m.id });
      await follow();
    } catch (error) {
      note.textContent = error.detail;
      button.disabled = false;
    }
  });
  if (m.download?.state === "running") {
    button.disabled = true;
    follow();
  }
  return h("article", { class: "model-offer", "data-model": m.id },
    h("h3", {}, m.name),
    h("p", {}, `${m.size ? formatBytes(m.size) : "size unknown"} · ${m.licence} · needs ${m.needs.ram_gb} GB RAM${m.needs.cpu ? " (runs on a CPU)" : `, ${m.needs.vram_gb} GB GPU memory`}`),
    h("p", {}, m.good_for),
    h("p", { class: "hint" }, `Trained on: ${m.trained_on} `, h("a", { href: m.source, target: "_blank", rel: "noopener noreferrer" }, "Source")),
    button, bar, note);
}
