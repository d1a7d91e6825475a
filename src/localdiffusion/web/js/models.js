// The Models page: what the library holds, adding a model by its path, and rescanning the folders.

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
      h("thead", {}, h("tr", {}, ...["Name", "Kind", "Family", "Format", "Hash", "Size"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody"));
    this.empty = h("p", { class: "empty", hidden: true }, "No models yet.");
    this.section.append(
      h("div", { class: "toolbar" }, this.rescanButton),
      h("div", { class: "table-wrap" }, this.table), this.empty,
      h("h2", {}, "Add a model"), form, this.help);
  }

  async show() {
    try {
      const [models, status] = await Promise.all([api.get("/api/models"), api.get("/api/status")]);
      this.render(models);
      this.help.textContent = status.add_models_help.replaceAll("`", "");
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
      h("td", { class: "num" }, formatBytes(m.size)))));
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
