// <ld-control-units>: the Generate page's ControlNet panel, one card per unit.
//
// A unit steers the image with a control map (edges, a pose, depth...) made from its picture by a
// preprocessor. Preview shows that map before generating and keeps it, so the job uses the very
// map the user saw. Pixel perfect makes the map at the image's size (the server works out the
// processing resolution); the control mode weighs the map against the prompt. The Generate page
// reads units() into the recipe's `controls`, sets `context` (a function giving {family, steps,
// size}) and calls fill(controls) when a recipe is loaded.

import { CardList } from "./card-list.js";
import { api, cached, forget, ApiError } from "./api.js";
import { h, on, uid } from "./dom.js";
import "./image-input.js";
import "./pose-editor.js";

const MODELS_PATH = "/api/models?kind=controlnet";
const NUMBERS = ["weight", "guidance_start", "guidance_end"];

let openHelp = null;
document.addEventListener("click", (event) => {
  if (openHelp && !openHelp.contains(event.target)) closeHelp();
});

function closeHelp() {
  openHelp?.classList.remove("help-open");
  openHelp?.querySelector(".info")?.setAttribute("aria-expanded", "false");
  openHelp = null;
}

/** A labelled control with an "i" button and its explanation, laid out like the studio's other fields.
 * Unlike fields.js, the ids are unique, so each card of a list can have its own. */
export function unitField(key, control, { label, help, extra = [], className = "" }) {
  control.id ||= uid(`cn-${key}`);
  const helpId = uid(`cn-help-${key}`);
  const bubble = help ? h("p", { class: "help", id: helpId, role: "note" }, help) : null;
  const info = help ? h("button", {
    type: "button", class: "info", "aria-label": `What does ${label} do?`, "aria-expanded": "false", "aria-controls": helpId,
    onclick: (event) => {
      const fieldEl = event.currentTarget.closest(".field");
      const wasOpen = fieldEl === openHelp;
      closeHelp();
      if (!wasOpen) {
        fieldEl.classList.add("help-open");
        event.currentTarget.setAttribute("aria-expanded", "true");
        openHelp = fieldEl;
      }
    },
  }, "i") : null;
  if (help) control.setAttribute("aria-describedby", helpId);
  const isCheck = control.type === "checkbox";
  const labelEl = h("label", { for: control.id }, label);
  const head = isCheck ? h("div", { class: "field-head check" }, control, labelEl, info) : h("div", { class: "field-head" }, labelEl, info);
  const body = isCheck ? null : h("div", { class: "field-body" }, control, ...extra);
  return h("div", { class: `field ${className}`.trim(), dataset: { unitField: key } }, head, body, bubble);
}

/** A number input with a linked slider. */
export function sliderField(key, { label, help, min, max, step, value }) {
  const input = h("input", { type: "number", inputmode: "decimal", min, max, step: step ?? "any" });
  const range = h("input", { type: "range", tabindex: "-1", "aria-label": `${label} slider`, min, max, step: step ?? "0.01" });
  input.value = range.value = String(value);
  range.addEventListener("input", () => {
    input.value = range.value;
    input.dispatchEvent(new Event("input", { bubbles: true }));
  });
  input.addEventListener("input", () => {
    range.value = input.value;
  });
  const el = unitField(key, input, { label, help, extra: [range], className: "with-slider" });
  el.setValue = (v) => {
    input.value = range.value = String(v);
  };
  return el;
}

/** The 1-based steps a unit steers, as the ControlNet extension counts them (index/total >= start, (index+1)/total <= end). */
export function activeSteps(start, end, steps) {
  const first = Math.ceil(start * steps - 1e-9) + 1;
  const last = Math.min(steps, Math.floor(end * steps + 1e-9));
  return [first, last];
}

function baseFamily(family) {
  return (family || "").split("-")[0];
}

class ControlUnits extends CardList {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.cards = [];
    this.context ??= () => ({ family: null, steps: 20, size: null });
    this.list = h("div", { class: "control-list" });
    this.addButton = h("button", { type: "button", onclick: () => this.add() }, "Add ControlNet unit");
    this.error = h("p", { class: "field-error", id: "err-controls", hidden: true });
    this.append(
      h("p", { class: "hint" }, "ControlNet steers the composition with a picture: the edges of a photo, a drawing, "
        + "a pose or depth. Add a unit and give it a picture; with a preprocessor, 'Preview the map' shows what it will follow."),
      this.list, this.addButton, this.error);
    // The checkpoint decides which ControlNets fit; the steps, which steps a unit's window covers;
    // the size, which map a pixel-perfect unit needs.
    const form = this.closest("form");
    for (const type of ["input", "change"]) {
      form?.addEventListener(type, (event) => {
        if (["model", "steps", "width", "height"].includes(event.target.name)) this.familyChanged();
      });
    }
    on("models-changed", () => {
      forget(MODELS_PATH);
      this.refreshModels();
    });
  }

  async choices() {
    const [modules, models] = await Promise.all([cached("/api/controls/modules"), cached(MODELS_PATH)]);
    return { modules: modules.modules, fields: modules.unit_fields, models };
  }

  /** A new unit card; `unit` (a recipe's ControlUnit) fills it. */
  async add(unit = null) {
    return this.place(new UnitCard(this, await this.choices(), unit), "select, input", !unit);
  }

  async refreshModels() {
    const { models } = await this.choices();
    for (const card of this.cards) card.setModels(models);
  }

  familyChanged() {
    for (const card of this.cards) {
      card.setModels(card.models);
      card.update();
    }
  }

  /** The recipe's `controls`: the enabled units, in order. */
  units() {
    return this.cards.filter((card) => card.enabled).map((card) => card.unit());
  }

  /** Before submitting: an ApiError naming the first enabled unit that has no picture. */
  check() {
    const card = this.cards.find((c) => c.enabled && !c.image);
    if (card) {
      this.closest("details")?.setAttribute("open", "");
      throw new ApiError(400, `ControlNet unit ${card.index + 1} has no picture; upload one, open the pose editor, or remove the unit.`, "controls");
    }
  }

  /** Replace the units with a recipe's `controls`. */
  async fill(controls = []) {
    for (const card of [...this.cards]) card.el.remove();
    this.cards = [];
    for (const unit of controls) await this.add(unit);
  }
}

class UnitCard {
  constructor(panel, { modules, fields, models }, unit) {
    this.panel = panel;
    this.modules = modules;
    this.fields = fields;
    this.models = models;
    this.image = null; // {ref, url}
    this.pose = null; // the pose editor's JSON when the image came from it
    this.map = null; // {ref, url, key}: the previewed map and the settings it was made with
    this.build();
    if (unit) this.fill(unit);
    this.update();
  }

  field(key) {
    return this.fields[key] || {};
  }

  build() {
    const f = (key) => this.field(key);
    this.title = h("h3", {}, "ControlNet unit");
    this.enabledBox = h("input", { type: "checkbox", id: uid("cn-enabled") });
    this.enabledBox.checked = true;
    const enabled = h("label", { class: "check", for: this.enabledBox.id }, this.enabledBox, "Enabled");
    this.removeButton = h("button", { type: "button", class: "danger", onclick: () => this.panel.remove(this) }, "Remove");

    this.imageInput = h("ld-image-input", { id: uid("cn-image") });
    this.imageInput.addEventListener("image", (event) => this.setImage(event.detail, null));
    this.poseButton = h("button", { type: "button", onclick: () => this.openPoseEditor() }, "Open the pose editor");
    this.sourcePreview = h("img", { class: "control-thumb", alt: "The unit's picture", hidden: true });
    const imageField = h("div", { class: "field", dataset: { unitField: "image" } },
      h("div", { class: "field-head" }, h("span", { class: "label" }, f("image").label || "Control image")),
      h("p", { class: "hint" }, f("image").help || ""),
      this.imageInput, h("div", { class: "row control-pose-row" }, this.poseButton), this.sourcePreview);

    this.moduleSelect = h("select", {}, ...this.modules.map((m) => h("option", { value: m.name }, m.label)));
    this.moduleSelect.addEventListener("change", () => this.update());
    this.moduleHelp = h("p", { class: "hint module-help" });
    this.params = h("div", { class: "row control-params" });
    this.previewButton = h("button", { type: "button", onclick: () => this.preview() }, "Preview the map");
    this.mapPreview = h("img", { class: "control-thumb control-map", alt: "The control map", hidden: true });
    this.status = h("p", { class: "hint", role: "status", "aria-live": "polite" });

    this.modelSelect = h("select", {});
    this.modelNote = h("p", { class: "hint" });

    const number = (key, label) => {
      const p = f(key);
      return sliderField(key, { label: p.label || label, help: p.help, min: p.min ?? 0, max: p.max ?? 1, step: p.step ?? 0.05,
        value: p.default ?? 0 });
    };
    this.numbers = { weight: number("weight", "Control weight"), guidance_start: number("guidance_start", "Starting control step"),
      guidance_end: number("guidance_end", "Ending control step") };
    this.window = h("p", { class: "hint control-window", "aria-live": "polite" });
    this.resizeSelect = h("select", {}, ...(f("resize_mode").choices || ["Just Resize", "Crop and Resize", "Resize and Fill"])
      .map((c) => h("option", { value: c }, c)));
    this.resizeSelect.value = f("resize_mode").default || "Crop and Resize";
    this.controlModeSelect = h("select", {}, ...(f("control_mode").choices || ["Balanced"]).map((c) => h("option", { value: c }, c)));
    this.controlModeSelect.value = f("control_mode").default || "Balanced";
    this.pixelPerfectBox = h("input", { type: "checkbox" });
    this.pixelPerfectBox.checked = Boolean(f("pixel_perfect").default);

    this.el = h("section", { class: "control-unit" },
      h("header", {}, this.title, enabled, this.removeButton),
      imageField,
      unitField("module", this.moduleSelect, { label: f("module").label || "Preprocessor", help: f("module").help }),
      this.moduleHelp, this.params,
      unitField("pixel_perfect", this.pixelPerfectBox, { label: f("pixel_perfect").label || "Pixel perfect", help: f("pixel_perfect").help }),
      h("div", { class: "row control-preview-row" }, this.previewButton, this.status), this.mapPreview,
      unitField("model", this.modelSelect, { label: f("model").label || "ControlNet model", help: f("model").help }),
      this.modelNote,
      this.numbers.weight,
      h("div", { class: "row" }, this.numbers.guidance_start, this.numbers.guidance_end),
      this.window,
      unitField("resize_mode", this.resizeSelect, { label: f("resize_mode").label || "Resize mode", help: f("resize_mode").help }),
      unitField("control_mode", this.controlModeSelect, { label: f("control_mode").label || "Control mode", help: f("control_mode").help }));
    this.el.addEventListener("input", () => this.update());
    this.el.addEventListener("change", () => this.update());
    this.setModels(this.models);
  }

  setIndex(i) {
    this.index = i;
    this.title.textContent = `ControlNet unit ${i + 1}`;
    this.el.setAttribute("aria-label", `ControlNet unit ${i + 1}`);
    this.el.dataset.unit = String(i);
    this.removeButton.setAttribute("aria-label", `Remove ControlNet unit ${i + 1}`);
  }

  get enabled() {
    return this.enabledBox.checked;
  }

  module() {
    return this.modules.find((m) => m.name === this.moduleSelect.value) || this.modules[0];
  }

  /** The preprocessor's own parameters (thresholds, processing resolution), rebuilt when the module changes. */
  buildParams(values = {}) {
    const module = this.module();
    if (this.paramsFor === module.name) return;
    this.paramsFor = module.name;
    this.paramInputs = {};
    this.params.replaceChildren(...module.params.map((p) => {
      const input = h("input", { type: "number", inputmode: "decimal", min: p.min, max: p.max, step: p.step });
      const given = values[p.name];
      input.value = String(given !== undefined && given !== -1 ? given : p.default);
      this.paramInputs[p.name] = input;
      return unitField(p.name, input, { label: p.label, help: p.help });
    }));
  }

  paramValues() {
    const values = { processor_res: 512, threshold_a: -1, threshold_b: -1 };
    for (const [name, input] of Object.entries(this.paramInputs || {})) {
      if (input.value.trim() !== "") values[name] = Number(input.value);
    }
    return values;
  }

  /** Pixel perfect's request fields: the resize mode and the image's size, which then set the processing resolution. */
  pixelPerfect() {
    if (!this.pixelPerfectBox.checked) return { pixel_perfect: false };
    const [width, height] = this.panel.context().size || [512, 512];
    return { pixel_perfect: true, resize_mode: this.resizeSelect.value, width, height };
  }

  /** What a map depends on; a preview stays valid while this is unchanged. */
  mapKey() {
    const { processor_res: res, ...thresholds } = this.paramValues();
    const resolution = this.pixelPerfectBox.checked ? this.pixelPerfect() : { processor_res: res };
    return JSON.stringify([this.image?.ref, this.module().name, thresholds, resolution]);
  }

  update() {
    this.buildParams();
    const module = this.module();
    const resolution = this.paramInputs?.processor_res;
    if (resolution) resolution.disabled = this.pixelPerfectBox.checked; // pixel perfect works it out
    this.moduleHelp.textContent = module.help;
    this.previewButton.hidden = module.name === "none";
    const fresh = this.map && this.map.key === this.mapKey();
    this.mapPreview.hidden = !fresh;
    if (this.map && !fresh) this.status.textContent = "The settings changed since the preview; the map is made again when you generate.";
    this.describeWindow();
    this.describeModel();
  }

  describeWindow() {
    const value = (key) => Number(this.numbers[key].querySelector("input[type=number]").value);
    const steps = Number(this.panel.context().steps) || 20;
    const [first, last] = activeSteps(value("guidance_start"), value("guidance_end"), steps);
    this.window.textContent = first > last
      ? `With ${steps} steps this unit never steers: the ending step must come after the starting step.`
      : `With ${steps} steps this unit steers steps ${first} to ${last}${first === 1 && last === steps ? " (all of them)" : ""}.`;
  }

  // --- models ------------------------------------------------------------------------------

  familyModels(models = this.models) {
    const family = baseFamily(this.panel.context().family);
    return family ? models.filter((m) => baseFamily(m.family) === family) : models;
  }

  setModels(models) {
    this.models = models;
    const previous = this.modelSelect.value;
    const fitting = this.familyModels();
    this.modelSelect.replaceChildren(h("option", { value: "" }, "Automatic"),
      ...fitting.map((m) => h("option", { value: m.name }, m.short_hash ? `${m.name} [${m.short_hash}]` : m.name)));
    if (fitting.some((m) => m.name === previous)) this.modelSelect.value = previous;
    this.describeModel();
  }

  describeModel() {
    const fitting = this.familyModels();
    const family = this.panel.context().family;
    if (!fitting.length) {
      this.modelNote.textContent = `No ControlNet ${family ? `for ${family} checkpoints ` : ""}is installed yet; `
        + "put one in models/ControlNet in the studio's home folder and rescan on the Models page.";
    } else if (!this.modelSelect.value && this.module().name === "none") {
      this.modelNote.textContent = "With a ready-made map, 'Automatic' takes the first fitting ControlNet; choose the one "
        + "trained for this kind of map (pose, edges, depth...).";
    } else {
      this.modelNote.textContent = "";
    }
  }

  /** The ControlNet for a kind of map, by its name ("openpose", "canny"...), among those fitting the checkpoint. */
  modelFor(type) {
    return this.familyModels().find((m) => m.name.toLowerCase().includes(type)) || null;
  }

  // --- pictures, previews and the pose editor --------------------------------------------

  /** The unit's picture; `from` names where a picture that was not uploaded here came from (the drop zone says it). */
  setImage(image, pose, from = null) {
    this.image = image;
    this.pose = pose;
    if (from) this.imageInput.show(image, from);
    this.sourcePreview.src = image.url;
    this.sourcePreview.hidden = false;
    this.map = null;
    this.status.textContent = "";
    this.update();
  }

  async preview() {
    if (!this.image) {
      this.status.textContent = "Give the unit a picture first.";
      return;
    }
    this.previewButton.disabled = true;
    this.status.textContent = "Making the map…";
    try {
      const key = this.mapKey();
      const answer = await api.post("/api/controls/preview",
        { image: this.image.ref, module: this.module().name, ...this.paramValues(), ...this.pixelPerfect() });
      this.map = { ref: answer.ref, url: answer.url, key, processorRes: answer.processor_res };
      this.mapPreview.src = answer.url;
      this.status.textContent = `This is the map the ControlNet will follow (${answer.width} × ${answer.height}).`;
    } catch (error) {
      this.status.textContent = error.detail || error.message;
    } finally {
      this.previewButton.disabled = false;
      this.update();
    }
  }

  openPoseEditor() {
    const { dialog, editor } = poseDialog();
    const size = this.panel.context().size || null;
    editor.open({ pose: this.pose, size });
    editor.onuse = (map) => {
      this.setImage({ ref: map.ref, url: map.url, width: map.width, height: map.height }, map.pose, "The pose editor's map");
      this.moduleSelect.value = "none";
      const model = this.modelFor("openpose");
      if (model) this.modelSelect.value = model.name;
      this.update();
      this.status.textContent = model
        ? `The pose is the map; the ControlNet '${model.name}' will follow it.`
        : "The pose is the map; no ControlNet with 'openpose' in its name fits this checkpoint, so 'Automatic' picks one.";
      dialog.close();
      this.poseButton.focus();
    };
    dialog.showModal();
  }

  // --- the recipe --------------------------------------------------------------------------

  unit() {
    const number = (key) => Number(this.numbers[key].querySelector("input[type=number]").value);
    const unit = {
      model: this.modelSelect.value, image: this.image?.ref ?? null, module: this.module().name, weight: number("weight"),
      guidance_start: number("guidance_start"), guidance_end: number("guidance_end"), resize_mode: this.resizeSelect.value,
      control_mode: this.controlModeSelect.value, pixel_perfect: this.pixelPerfectBox.checked, ...this.paramValues(),
    };
    if (this.map && this.map.key === this.mapKey()) {
      unit.map = this.map.ref;
      if (unit.pixel_perfect && this.map.processorRes) unit.processor_res = this.map.processorRes; // what the map was made at
    }
    return unit;
  }

  fill(unit) {
    if (unit.module && this.modules.some((m) => m.name === unit.module)) this.moduleSelect.value = unit.module;
    this.buildParams(unit);
    if (unit.resize_mode) this.resizeSelect.value = unit.resize_mode;
    if (unit.control_mode) this.controlModeSelect.value = unit.control_mode;
    this.pixelPerfectBox.checked = Boolean(unit.pixel_perfect);
    if (unit.image) this.setImage({ ref: unit.image, url: `/api/${unit.image}` }, null, "The recipe's picture");
    if (unit.map && unit.module !== "none") {
      this.map = { ref: unit.map, url: `/api/${unit.map}`, key: this.mapKey(), processorRes: unit.processor_res };
      this.mapPreview.src = this.map.url;
    }
    for (const key of NUMBERS) if (typeof unit[key] === "number") this.numbers[key].setValue(unit[key]);
    if (unit.model) {
      if (![...this.modelSelect.options].some((o) => o.value === unit.model)) {
        this.modelSelect.append(h("option", { value: unit.model }, `${unit.model} (not found here)`));
      }
      this.modelSelect.value = unit.model;
    }
  }
}

// One pose editor dialog for the page, shared by the units.
let shared = null;
function poseDialog() {
  if (shared) return shared;
  const editor = h("ld-pose-editor", { id: "pose-editor" });
  const dialog = h("dialog", { class: "pose-dialog", "aria-labelledby": "pose-dialog-title" },
    h("div", { class: "viewer-head" }, h("h2", { id: "pose-dialog-title" }, "Pose editor"),
      h("button", { type: "button", class: "close", "aria-label": "Close the pose editor", onclick: () => dialog.close() }, "×")),
    h("div", { class: "pose-dialog-body" }, editor));
  document.body.append(dialog);
  editor.addEventListener("use", (event) => editor.onuse?.(event.detail));
  shared = { dialog, editor };
  return shared;
}

customElements.define("ld-control-units", ControlUnits);
