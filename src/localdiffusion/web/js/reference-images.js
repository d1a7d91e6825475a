// <ld-reference-images>: the Generate page's reference pictures, one card per picture.
//
// A reference makes the image resemble another picture (a character's look), through an IP-Adapter.
// Each card holds the uploaded picture, its scale and, optionally, the adapter ("Automatic": the
// server picks the installed one that fits the checkpoint). The Generate page reads references()
// into the recipe's `references`, sets `context` (a function giving {family}), calls familyChanged() when
// the checkpoint changes, fill(references) when a recipe is loaded and showError(field, message) for a
// refusal naming `references.N.*`.

import { CardList } from "./card-list.js";
import { cached, forget, ApiError } from "./api.js";
import { h, on, uid } from "./dom.js";
import { param } from "./fields.js";
import { sliderField, unitField } from "./control-units.js";
import "./image-input.js";

const MODELS_PATH = "/api/models?kind=ipadapter";
const DEFAULT_SCALE = 0.5;
const ADAPTER_HELP = "The IP-Adapter that applies the picture. 'Automatic' takes the installed one made for the "
  + "chosen checkpoint; 'plus' adapters copy more detail than plain ones.";
// What the server answers when an adapter or its image encoder is missing, said before anything is sent.
const NO_ADAPTER = "No IP-Adapter is installed, so reference images cannot be used yet: put one (for example "
  + "ip-adapter_sd15.safetensors for SD 1.x) in models/IP-Adapter in the studio's home folder, with its CLIP image "
  + "encoder (config.json and model.safetensors) in models/IP-Adapter/image_encoder/, then rescan on the Models page.";

function baseFamily(family) {
  return (family || "").split("-")[0];
}

/** "ip-adapter_sd15 [1a2b3c4d]", as recorded recipes name an adapter, to its library name. */
function nameOf(title) {
  return title.replace(/ \[[0-9a-f]+\]$/i, "");
}

class ReferenceImages extends CardList {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.cards = [];
    this.models = [];
    this.context ??= () => ({ family: null });
    this.note = h("p", { class: "hint reference-note", role: "status", hidden: true });
    this.list = h("div", { class: "control-list" });
    this.addButton = h("button", { type: "button", onclick: () => this.add() }, "Add reference image");
    this.error = h("p", { class: "field-error", id: "err-references", hidden: true });
    this.append(
      h("p", { class: "hint" }, "A reference image makes your picture resemble another one: a character's face, "
        + "clothes and colours. Add a picture and set how strongly it counts."),
      this.note, this.list, this.addButton, this.error);
    on("models-changed", () => {
      forget(MODELS_PATH);
      this.refreshModels();
    });
    this.refreshModels();
  }

  async refreshModels() {
    this.models = await cached(MODELS_PATH);
    this.loaded = true;
    this.familyChanged();
  }

  /** The adapters a card may offer: made for the checkpoint's family, or of a family the scan could not tell. */
  fitting() {
    const family = baseFamily(this.context().family);
    return this.models.filter((m) => !family || m.family === "unknown" || baseFamily(m.family) === family);
  }

  /** Call when the checkpoint changes: it decides which adapters fit. */
  familyChanged() {
    if (!this.loaded) return;
    const fitting = this.fitting();
    const family = this.context().family;
    if (!this.models.length) this.note.textContent = NO_ADAPTER;
    else if (!fitting.length) this.note.textContent = `None of the installed IP-Adapters is made for ${family} checkpoints; `
      + "add one to models/IP-Adapter in the studio's home folder, or choose another model.";
    else this.note.textContent = "";
    this.note.hidden = !this.note.textContent;
    this.addButton.disabled = !this.models.length;
    for (const card of this.cards) card.setModels(fitting);
  }

  /** A new card; `reference` (a recipe's Reference) fills it. */
  add(reference = null) {
    return this.place(new ReferenceCard(this, reference), "input[type=file]", !reference);
  }

  /** The recipe's `references`, in the order of the cards (so a refusal's index names its card). */
  references() {
    return this.cards.map((card) => card.reference());
  }

  /** Before submitting: an ApiError naming the first card without a picture. */
  check() {
    const card = this.cards.find((c) => !c.image);
    if (card) {
      this.closest("details")?.setAttribute("open", "");
      throw new ApiError(400, `Reference image ${card.index + 1} has no picture; upload one or remove it.`,
        `references.${card.index}.image`);
    }
  }

  /** Show a refusal naming `references.N.image` or `references.N.model` in that card; returns the element shown, or null. */
  showError(field, message) {
    const found = /^references\.(\d+)\.(\w+)/.exec(field || "");
    const card = found && this.cards[Number(found[1])];
    if (!card) return null;
    this.closest("details")?.setAttribute("open", "");
    return card.showError(found[2], message);
  }

  /** Replace the cards with a recipe's `references`. */
  fill(references = []) {
    for (const card of this.cards) card.el.remove();
    this.cards = [];
    for (const reference of references) this.add(reference);
    if (references.length) this.closest("details")?.setAttribute("open", "");
  }
}

class ReferenceCard {
  constructor(panel, reference) {
    this.panel = panel;
    this.image = null; // {ref, url}
    this.build();
    this.setModels(panel.fitting());
    if (reference) this.fill(reference);
  }

  build() {
    this.title = h("h3", {}, "Reference image");
    this.removeButton = h("button", { type: "button", class: "danger", onclick: () => this.panel.remove(this) }, "Remove");

    this.imageInput = h("ld-image-input", { id: uid("ref-image") });
    this.imageInput.addEventListener("image", (event) => this.setImage(event.detail));
    this.thumb = h("img", { class: "control-thumb", alt: "The reference picture", hidden: true });
    this.errors = {
      image: h("p", { class: "field-error", id: uid("ref-err-image"), hidden: true }),
      model: h("p", { class: "field-error", id: uid("ref-err-model"), hidden: true }),
    };
    const imageField = h("div", { class: "field", dataset: { unitField: "image" } },
      h("div", { class: "field-head" }, h("span", { class: "label" }, "Picture")),
      this.imageInput, this.thumb, this.errors.image);

    this.scale = sliderField("scale", { label: "Scale", help: param("references").help, min: 0, max: 1, step: 0.05,
      value: DEFAULT_SCALE });
    this.modelSelect = h("select", {});
    const modelField = unitField("model", this.modelSelect, { label: "IP-Adapter", help: ADAPTER_HELP });
    modelField.append(this.errors.model);

    this.el = h("section", { class: "control-unit reference-image" },
      h("header", {}, this.title, this.removeButton), imageField, this.scale, modelField);
  }

  setIndex(i) {
    this.index = i;
    this.title.textContent = `Reference image ${i + 1}`;
    this.el.setAttribute("aria-label", `Reference image ${i + 1}`);
    this.el.dataset.reference = String(i);
    this.removeButton.setAttribute("aria-label", `Remove reference image ${i + 1}`);
  }

  setModels(models) {
    const previous = this.modelSelect.value;
    this.modelSelect.replaceChildren(h("option", { value: "" }, "Automatic"),
      ...models.map((m) => h("option", { value: m.name }, m.short_hash ? `${m.name} [${m.short_hash}]` : m.name)));
    if (previous) this.choose(previous);
  }

  /** Choose an adapter by name or recorded title, offering it even if it is not installed here. */
  choose(model) {
    const options = [...this.modelSelect.options].map((o) => o.value);
    const value = options.includes(model) ? model : options.includes(nameOf(model)) ? nameOf(model) : model;
    if (!options.includes(value)) this.modelSelect.append(h("option", { value }, `${value} (not found here)`));
    this.modelSelect.value = value;
  }

  setImage(image) {
    this.image = image;
    this.thumb.src = image.url;
    this.thumb.hidden = false;
    this.errors.image.hidden = true;
  }

  showError(part, message) {
    const error = this.errors[part] || this.errors.image;
    error.textContent = message;
    error.hidden = false;
    const control = part === "model" ? this.modelSelect : this.el.querySelector("input[type=file]");
    control?.setAttribute("aria-invalid", "true");
    control?.setAttribute("aria-errormessage", error.id);
    return error.closest(".field");
  }

  reference() {
    return { image: this.image?.ref ?? null, scale: Number(this.scale.querySelector("input[type=number]").value),
      model: this.modelSelect.value };
  }

  fill(reference) {
    if (reference.image) this.setImage({ ref: reference.image, url: `/api/${reference.image}` });
    if (typeof reference.scale === "number") this.scale.setValue(reference.scale);
    if (reference.model) this.choose(reference.model);
  }
}

customElements.define("ld-reference-images", ReferenceImages);
