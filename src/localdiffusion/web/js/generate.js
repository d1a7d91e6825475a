// The Generate page: the recipe form (one tab per mode), submission, and the live job cards.

import { api, cached, ApiError } from "./api.js";
import { h, emit, on, toast, roundTo8 } from "./dom.js";
import {
  setParameters, param, field, numberField, selectField, checkField, setOptions, chooseOption,
  showFieldError, clearFieldErrors,
} from "./fields.js";
import { JobCard } from "./job-view.js";
import { renderOffers } from "./models.js";
import { openViewer } from "./viewer.js";
import "./image-input.js";
import "./mask-editor.js";
import "./control-units.js";
import "./reference-images.js";
import { installPromptsLikeYours } from "./library.js";

const MODES = [
  ["txt2img", "Text to image"],
  ["img2img", "Image to image"],
  ["inpaint", "Inpaint"],
  ["outpaint", "Outpaint"],
];
const FILL_NAMES = [["0", "fill (flat colours)"], ["1", "original"], ["2", "latent noise"], ["3", "latent nothing"]];
// What outpainting starts the new area from (Outpaint.fill).
const OUTPAINT_FILLS = [["edge", "Stretched edge"], ["noise", "Noise in the image's colours"], ["blur", "Blurred edge"]];
const SIDES = ["left", "right", "up", "down"];
const SAVED_KEY = "localdiffusion.form";
const MAX_CARDS = 12;

// Recipe fields read from and written to plain inputs of the same name.
const NUMBER_FIELDS = ["width", "height", "steps", "cfg_scale", "seed", "batch_size", "n_iter", "denoising_strength",
  "clip_skip", "subseed", "subseed_strength", "hr_scale", "hr_second_pass_steps", "mask_blur", "inpaint_full_res_padding",
  "eta", "eta_noise_seed_delta", "refiner_switch_at", "distilled_cfg_scale"];
const TEXT_FIELDS = ["prompt", "negative_prompt", "hr_upscaler"];
const CHECK_FIELDS = ["enable_hr", "inpaint_full_res", "sgm_noise_multiplier", "pad_cond_uncond"];
const RNG_SOURCES = [["cpu", "CPU (the same everywhere)"], ["device", "This device's own"], ["nv", "NV (an NVIDIA GPU's numbers)"]];

/** 40 s, 2 min, 1 h 5 min: an estimate as a person says it. */
function duration(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

function orientation([w, h]) {
  return w === h ? "square" : w > h ? "landscape" : "portrait";
}

/** Text with `code` spans, as the server writes its help. */
function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? h("code", {}, part) : part));
}

export async function initGenerate(section) {
  const [parameters, status, models, samplers, upscalers, presets, approx] = await Promise.all([
    cached("/api/parameters"), api.get("/api/status"), api.get("/api/models?kind=checkpoint"),
    cached("/api/samplers"), cached("/api/upscalers"), cached("/api/presets"), api.get("/api/models?kind=vae-approx").catch(() => []),
  ]);
  setParameters(parameters);
  return new GeneratePage(section, { status, models, samplers, upscalers, presets, approx });
}

class GeneratePage {
  constructor(section, { status, models, samplers, upscalers, presets, approx }) {
    this.section = section;
    this.estimateCount = 0;
    this.approx = approx || []; // installed TAESDs (VAE-approx), by family: what the fast decoder needs
    this.models = models;
    this.samplers = samplers;
    this.presets = presets;
    this.mode = "txt2img";
    this.image = null; // {ref, width, height, url} of the uploaded input image
    this.lastSeed = null;
    this.family = null;
    this.build(upscalers);
    this.showModels(status, models);
    this.restore();
    this.update();
    on("models-changed", () => this.refreshModels());
    this.showRecentJobs();
  }

  /** After a reload, this tab's latest jobs come back (a running one keeps its live progress). */
  async showRecentJobs() {
    try {
      const jobs = await api.get("/api/jobs?limit=6");
      for (const job of jobs.reverse()) this.addCard(job);
    } catch {
      /* the list is a convenience; the form works without it */
    }
  }

  // --- building -------------------------------------------------------------------------

  build(upscalers) {
    const f = (name) => this.form.querySelector(`[name="${name}"]`);
    this.form = h("form", { class: "gen-form", id: "gen-form", role: "tabpanel", novalidate: true });
    this.tabs = this.buildTabs();

    const prompt = h("textarea", { rows: 4, placeholder: "a watercolour fox in a misty forest, soft morning light" });
    const negative = h("textarea", { rows: 2, placeholder: "blurry, low quality" });
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });

    this.callout = h("div", { class: "callout", role: "region", "aria-label": "No models yet", hidden: true });

    this.imageInput = h("ld-image-input", { id: "init-image" });
    this.imagePreview = h("img", { class: "input-preview", alt: "The input image", hidden: true });
    this.maskEditor = h("ld-mask-editor", { id: "mask-editor" });
    this.outpaintPreview = h("canvas", { class: "input-preview outpaint-preview", role: "img", hidden: true,
      "aria-label": "The input image with the area to be painted around it" });
    this.imageInput.addEventListener("image", (event) => this.onImage(event.detail));
    const imageField = h("div", { class: "field image-field", dataset: { field: "init_image", modes: "img2img inpaint outpaint" } },
      h("div", { class: "field-head" }, h("span", { class: "label", id: "init-image-label" }, "Input image")),
      this.imageInput, this.imagePreview, this.outpaintPreview, h("p", { class: "field-error", id: "err-init_image", hidden: true }));
    const maskField = h("div", { class: "field mask-field", dataset: { field: "mask", modes: "inpaint" } },
      h("div", { class: "field-head" }, h("span", { class: "label" }, "Mask")),
      this.maskEditor, h("p", { class: "field-error", id: "err-mask", hidden: true }));

    const model = selectField("model", []);
    this.modelSelect = model.querySelector("select");
    this.modelSelect.addEventListener("change", () => this.onModel());

    this.presetSelect = h("select", { id: "f-size-preset", name: "size_preset" });
    this.presetSelect.addEventListener("change", () => this.onPreset());
    const presetField = field("size_preset", this.presetSelect, { label: "Size" });
    const width = numberField("width", { step: 8, min: 64 });
    const height = numberField("height", { step: 8, min: 64 });
    const swap = h("button", { type: "button", class: "icon", "aria-label": "Swap width and height", onclick: () => this.swapSize() }, "⇄");
    const sizeRow = h("div", { class: "size-group", dataset: { modes: "txt2img img2img inpaint" } },
      presetField, h("div", { class: "row size-row" }, width, swap, height));
    for (const input of [width, height].map((el) => el.querySelector("input"))) input.addEventListener("change", () => this.syncPreset());

    const sampler = selectField("sampler_name", this.samplers.map((s) => s.name));
    this.samplerSelect = sampler.querySelector("select");
    this.samplerSelect.value = param("sampler_name").default || this.samplers[0]?.name;
    this.samplerSelect.addEventListener("change", () => this.updateSchedules());
    const schedule = selectField("scheduler", []);
    this.scheduleSelect = schedule.querySelector("select");

    const seedInput = h("input", { type: "number", min: -1, step: 1 });
    seedInput.value = param("seed").default ?? -1;
    // The accessible name starts with the visible words (WCAG 2.5.3); the seed itself goes in the description.
    this.reuseButton = h("button", { type: "button", disabled: true, onclick: () => this.reuseSeed(), "aria-label": "Reuse last seed" }, "Reuse last");
    const seed = field("seed", seedInput, {
      extra: [h("button", { type: "button", onclick: () => this.setValue("seed", -1), "aria-label": "Random seed (-1)" }, "Random"), this.reuseButton],
      className: "seed-field",
    });

    const denoise = numberField("denoising_strength", { slider: true });
    denoise.dataset.modes = "img2img inpaint outpaint hires";

    const fill = selectField("inpainting_fill", FILL_NAMES);
    fill.querySelector("select").value = String(param("inpainting_fill").default ?? 1);
    const onlyMasked = checkField("inpaint_full_res");
    const padding = numberField("inpaint_full_res_padding");
    onlyMasked.dataset.modes = padding.dataset.modes = "inpaint";

    const upscaler = selectField("hr_upscaler", upscalers);
    upscaler.querySelector("select").value = param("hr_upscaler").default || upscalers[0];
    const hiresOptions = h("div", { class: "row", dataset: { modes: "hires" } },
      numberField("hr_scale", { slider: true }), upscaler, numberField("hr_second_pass_steps"));
    const hires = h("fieldset", { class: "group", dataset: { modes: "txt2img" } }, h("legend", {}, "Hires fix"),
      checkField("enable_hr"), hiresOptions);

    // FLUX dev's distilled guidance (Forge's "Distilled CFG Scale"), offered with a FLUX model only.
    this.distilledField = numberField("distilled_cfg_scale", { slider: true });
    // A1111's refiner: an SDXL model that takes over for the last steps (offered for SDXL models only).
    this.refinerSelect = selectField("refiner_checkpoint", []);
    const refiner = h("fieldset", { class: "group", dataset: { modes: "txt2img img2img inpaint" }, id: "refiner-group" },
      h("legend", {}, "Refiner (SDXL)"), h("div", { class: "row" }, this.refinerSelect, numberField("refiner_switch_at", { slider: true })));
    this.refinerGroup = refiner;

    this.controlUnits = h("ld-control-units", { id: "control-units" });
    this.controlUnits.context = () => ({ family: this.currentModel()?.family, steps: Number(this.field("steps").value) || 20,
      size: [Number(this.field("width").value) || 512, Number(this.field("height").value) || 512] });
    const controlnet = h("details", { class: "group more", dataset: { field: "controls" } }, h("summary", {}, "ControlNet"), this.controlUnits);
    this.referenceImages = h("ld-reference-images", { id: "reference-images" });
    this.referenceImages.context = () => ({ family: this.currentModel()?.family });
    const references = h("details", { class: "group more", dataset: { field: "references" } },
      h("summary", {}, "Reference images"), this.referenceImages);

    this.submitButton = h("button", { type: "submit", class: "primary big", id: "gen-submit" }, "Generate");
    this.estimate = h("p", { class: "hint estimate", id: "gen-estimate", "aria-live": "polite" });
    // A few-step model (SD-Turbo, LCM, Lightning...) wants its own settings: suggested, applied only on a click.
    this.fastPreset = h("div", { class: "callout fast-preset", id: "fast-preset", role: "region", "aria-label": "Few-step model", hidden: true });
    this.decoderSelect = h("select", { id: "f-vae-decode", name: "vae_decode" },
      h("option", { value: "full" }, "Full VAE (best quality)"), h("option", { value: "fast" }, "Fast: TAESD (quicker, a little less faithful)"));
    this.decoderField = field("vae_decode", this.decoderSelect, { label: "Decoder" });
    this.formError = h("p", { class: "form-error", role: "alert", hidden: true });

    this.form.append(
      this.callout,
      field("prompt", prompt), field("negative_prompt", negative),
      imageField, maskField,
      h("fieldset", { class: "group" }, h("legend", {}, "Model and size"), model, sizeRow),
      h("fieldset", { class: "group" }, h("legend", {}, "Sampling"), this.fastPreset,
        h("div", { class: "row" }, sampler, schedule),
        numberField("steps", { slider: true }), numberField("cfg_scale", { slider: true }), this.distilledField, denoise),
      h("fieldset", { class: "group", dataset: { modes: "inpaint outpaint" } }, h("legend", {}, "Mask options"),
        numberField("mask_blur", { slider: true }), fill, h("div", { class: "row" }, onlyMasked, padding)),
      this.buildOutpaint(),
      hires,
      refiner,
      controlnet,
      references,
      h("fieldset", { class: "group" }, h("legend", {}, "Seed and batch"),
        seed, h("div", { class: "row" }, numberField("batch_size"), numberField("n_iter"))),
      h("details", { class: "group more" }, h("summary", {}, "More settings"),
        numberField("clip_skip"), h("div", { class: "row" }, numberField("subseed"), numberField("subseed_strength", { slider: true })),
        h("div", { class: "row" }, numberField("eta"), numberField("eta_noise_seed_delta")),
        selectField("rng", RNG_SOURCES), h("div", { class: "row" }, checkField("sgm_noise_multiplier"), checkField("pad_cond_uncond"))),
      h("div", { class: "submit-row" }, this.decoderField, this.submitButton, this.estimate, this.formError,
        // On a narrow screen the results are under the long form: a link takes one there (CSS shows it below 900 px).
        h("a", { href: "#output-title", class: "jump-results", onclick: (event) => this.jumpToResults(event) }, "Jump to the results")));
    // "Prompts like yours" from the reference library, under the prompt (web/js/library.js)
    installPromptsLikeYours(prompt, (recipe) => {
      this.fill(recipe);
      this.save();
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.form.addEventListener("change", (event) => {
      if (event.target.name === "enable_hr" || SIDES.includes(event.target.dataset.side) || event.target.name === "outpaint_pixels") this.update();
      this.save();
    });
    this.form.addEventListener("input", (event) => {
      if (event.target.name === "outpaint_pixels") this.update();
      this.save();
    });
    for (const type of ["input", "change"]) this.form.addEventListener(type, () => this.refreshEstimate());
    this.field = f;

    this.jobList = h("div", { class: "job-list" });
    this.emptyOutput = h("p", { class: "empty" }, "Your images will appear here. Type a prompt and press Generate (or Ctrl+Enter).");
    const output = h("section", { class: "output", "aria-labelledby": "output-title" },
      h("h2", { id: "output-title", tabindex: "-1" }, "Results"), this.emptyOutput, this.jobList);
    this.section.append(h("div", { class: "generate-layout" }, h("div", { class: "form-column" }, this.tabs, this.form), output));
    this.updateSchedules();
  }

  buildTabs() {
    const list = h("div", { class: "tabs", role: "tablist", "aria-label": "Mode" });
    this.tabButtons = MODES.map(([mode, label]) => h("button", {
      type: "button", role: "tab", id: `mode-tab-${mode}`, "aria-controls": "gen-form", dataset: { mode },
      onclick: () => this.setMode(mode),
    }, label));
    list.addEventListener("keydown", (event) => {
      const index = this.tabButtons.findIndex((b) => b.dataset.mode === this.mode);
      const move = { ArrowRight: 1, ArrowLeft: -1, Home: -index, End: MODES.length - 1 - index }[event.key];
      if (move === undefined) return;
      event.preventDefault();
      const next = this.tabButtons[(index + move + MODES.length) % MODES.length];
      this.setMode(next.dataset.mode);
      next.focus();
    });
    list.append(...this.tabButtons);
    return list;
  }

  buildOutpaint() {
    this.outpaintSize = h("p", { class: "hint", "aria-live": "polite" });
    this.sideChecks = SIDES.map((side) => {
      const input = h("input", { type: "checkbox", id: `f-outpaint-${side}`, dataset: { side } });
      input.checked = side === "right";
      return h("label", { class: "chip", for: input.id }, input, ` ${side[0].toUpperCase()}${side.slice(1)}`);
    });
    const pixels = h("input", { type: "number", min: 8, max: 1024, step: 8 });
    pixels.value = 128;
    const pixelsField = field("outpaint_pixels", pixels, { label: "Pixels to add" });
    const fillField = selectField("outpaint_fill", OUTPAINT_FILLS, { label: "Fill the new area with" });
    this.outpaintFill = fillField.querySelector("select");
    const outpaintHelp = param("outpaint").help;
    return h("fieldset", { class: "group", dataset: { modes: "outpaint", field: "outpaint" } },
      h("legend", {}, "Outpaint"),
      outpaintHelp ? h("p", { class: "hint" }, outpaintHelp) : null,
      h("div", { class: "chips", role: "group", "aria-label": "Sides to extend" }, ...this.sideChecks),
      pixelsField, fillField, this.outpaintSize, h("p", { class: "field-error", id: "err-outpaint", hidden: true }));
  }

  // --- models and sizes -------------------------------------------------------------------

  showModels(status, models) {
    this.models = models;
    const options = models.map((m) => [m.name, m.family && m.family !== "unknown" ? `${m.name} (${m.family})` : m.name]);
    setOptions(this.modelSelect, options);
    const empty = models.length === 0;
    this.callout.hidden = !empty;
    this.submitButton.disabled = empty;
    if (empty) {
      this.callout.replaceChildren(
        h("h2", {}, "Add a model to start"),
        h("p", {}, "The studio needs at least one Stable Diffusion checkpoint before it can make images."),
        h("p", { class: "help-text" }, ...withCode(status.add_models_help || "")),
        h("p", {}, h("a", { href: "#/models", class: "button" }, "Open the Models page")));
      const offers = h("div", { class: "model-offers" });  // a first model in one click (models.js)
      this.callout.append(offers);
      renderOffers(offers).catch(() => offers.remove());  // when one is done, "models-changed" refreshes this page
    }
    this.onModel(false);
  }

  async refreshModels() {
    const [status, models] = await Promise.all([api.get("/api/status"), api.get("/api/models?kind=checkpoint")]);
    this.showModels(status, models);
  }

  currentModel() {
    return this.models.find((m) => m.name === this.modelSelect.value) || null;
  }

  familyPresets() {
    const family = this.currentModel()?.family || "sd1";
    return this.presets[family] || this.presets[family.replace(/-inpaint$/, "")] || this.presets.sd1 || [[512, 512]];
  }

  /** A new model family brings its own size presets; a different family also resets the size to its native one. */
  onModel(resetSize = true) {
    const model = this.currentModel();
    const family = model?.family || null;
    const presets = this.familyPresets();
    setOptions(this.presetSelect, [
      ...presets.map(([w, hgt]) => [`${w}x${hgt}`, `${w} × ${hgt} (${orientation([w, hgt])})`]),
      ["custom", "Custom"],
    ]);
    const sizeMissing = !this.field("width").value || !this.field("height").value;
    if (sizeMissing || (resetSize && family !== this.family && this.mode === "txt2img")) {
      const native = model?.native_size;
      const [w, hgt] = presets.find(([a, b]) => a === native && b === native) || presets[0];
      this.setValue("width", w);
      this.setValue("height", hgt);
    }
    this.family = family;
    this.syncPreset();
    this.referenceImages.familyChanged();
    this.showDecoders();
    this.showRefiners();
    this.distilledField.hidden = this.currentModel()?.family !== "flux";
    this.refreshEstimate();
  }

  /** The refiner is an SDXL feature: offered with an SDXL model, listing the other SDXL checkpoints. */
  showRefiners() {
    const sdxl = (this.currentModel()?.family || "").startsWith("sdxl");
    const select = this.field("refiner_checkpoint");
    const chosen = select.value;
    const others = this.models.filter((m) => m.family?.startsWith("sdxl") && m.name !== this.modelSelect.value);
    setOptions(select, [["", "None"], ...others.map((m) => [m.name, m.name])]);
    chooseOption(select, chosen);  // one that is not here stays, marked, so that the server can say so
    this.refinerGroup.hidden = !sdxl || others.length === 0 || this.mode === "outpaint";
  }

  /** The fast decoder is offered only when a TAESD for the model's family is installed. */
  showDecoders() {
    const family = (this.currentModel()?.family || "sd1").startsWith("sdxl") ? "sdxl" : "sd1";
    const available = this.approx.some((m) => m.family === family);
    this.decoderField.hidden = !available;
    if (!available) this.decoderSelect.value = "full";
  }

  /** "About 2 min on this machine" and the few-step suggestion, for the form as it is now (debounced). */
  refreshEstimate() {
    clearTimeout(this.estimateTimer);
    this.estimateTimer = setTimeout(async () => {
      const asked = ++this.estimateCount;
      let found = null;
      try {
        found = await api.post("/api/estimate", this.recipe());
      } catch {
        found = null; // a recipe that is not valid yet has no estimate; submitting says what is wrong
      }
      if (asked !== this.estimateCount) return; // a newer request answers instead
      this.estimate.textContent = !found ? "" : found.seconds === null ? "No estimate yet: this machine has not run this model."
        : `About ${duration(found.seconds)} on this machine.`;
      this.showFastPreset(found?.preset || null);
    }, 400);
  }

  showFastPreset(preset) {
    const values = preset?.values || {};
    const recipe = this.recipe();
    const differs = Object.entries(values).some(([name, value]) => recipe[name] !== value);
    this.fastPreset.hidden = !preset || !differs;
    if (this.fastPreset.hidden) return;
    const list = `${values.steps} steps, CFG ${values.cfg_scale}, ${values.sampler_name}, ${values.scheduler}`;
    this.fastPreset.replaceChildren(
      h("p", {}, `This looks like a few-step model (${preset.kind}, ${preset.model}): use its settings (${list})?`),
      h("button", { type: "button", id: "use-fast-preset", onclick: () => this.useFastPreset(values) }, "Use its settings"));
  }

  useFastPreset(values) {
    this.setValue("steps", values.steps);
    this.setValue("cfg_scale", values.cfg_scale);
    chooseOption(this.samplerSelect, values.sampler_name);
    this.updateSchedules();
    chooseOption(this.scheduleSelect, values.scheduler);
    this.fastPreset.hidden = true;
    this.save();
    this.refreshEstimate();
    toast("The form now has the few-step model's settings.");
  }

  onPreset() {
    if (this.presetSelect.value === "custom") return this.field("width").focus();
    const [w, hgt] = this.presetSelect.value.split("x").map(Number);
    this.setValue("width", w);
    this.setValue("height", hgt);
    this.save();
  }

  syncPreset() {
    const value = `${this.field("width").value}x${this.field("height").value}`;
    this.presetSelect.value = [...this.presetSelect.options].some((o) => o.value === value) ? value : "custom";
    this.update();
  }

  swapSize() {
    const w = this.field("width").value;
    this.setValue("width", this.field("height").value);
    this.setValue("height", w);
    this.syncPreset();
    this.save();
  }

  updateSchedules() {
    const sampler = this.samplers.find((s) => s.name === this.samplerSelect.value);
    const types = sampler?.schedule_types || ["Automatic"];
    const auto = sampler && sampler.automatic !== "Automatic" ? `Automatic (${sampler.automatic})` : "Automatic";
    setOptions(this.scheduleSelect, types.map((t) => [t, t === "Automatic" ? auto : t]));
  }

  // --- modes and the input image ---------------------------------------------------------

  setMode(mode) {
    this.mode = mode;
    this.update();
    this.save();
  }

  /** Show what the mode (and hires fix) needs, hide the rest. */
  update() {
    for (const tab of this.tabButtons) {
      const selected = tab.dataset.mode === this.mode;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
    }
    this.form.setAttribute("aria-labelledby", `mode-tab-${this.mode}`);
    const hires = this.mode === "txt2img" && this.field("enable_hr").checked;
    for (const el of this.form.querySelectorAll("[data-modes]")) {
      const modes = el.dataset.modes.split(" ");
      el.hidden = !(modes.includes(this.mode) || (hires && modes.includes("hires")));
    }
    this.showRefiners();
    const hasImage = Boolean(this.image);
    this.imagePreview.hidden = !hasImage || this.mode === "inpaint" || this.mode === "outpaint";
    this.outpaintPreview.hidden = !hasImage || this.mode !== "outpaint";
    if (this.mode === "outpaint") {
      this.outpaintSize.textContent = this.outpaintSizeText();
      this.drawOutpaint();
    }
  }

  outpaintSizeText() {
    if (!this.image) return "The result is the input image plus the pixels added on each chosen side.";
    const sides = this.outpaintSides();
    const w = this.image.width + sides.left + sides.right;
    const hgt = this.image.height + sides.up + sides.down;
    return `The result will be ${roundTo8(w)} × ${roundTo8(hgt)} pixels (the input is ${this.image.width} × ${this.image.height}).`;
  }

  /** The input image on a larger canvas: the hatched border is what outpainting will paint. */
  drawOutpaint() {
    const img = this.imageElement;
    if (!img?.complete || !img.naturalWidth) return;
    const sides = this.outpaintSides();
    const canvas = this.outpaintPreview;
    canvas.width = this.image.width + sides.left + sides.right;
    canvas.height = this.image.height + sides.up + sides.down;
    const ctx = canvas.getContext("2d");
    const stripe = Math.max(8, Math.round(canvas.width / 40));
    ctx.fillStyle = "#8a8f9c";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "#b9bdc7";
    ctx.lineWidth = stripe / 2;
    for (let x = -canvas.height; x < canvas.width; x += stripe * 1.5) {
      ctx.beginPath();
      ctx.moveTo(x, canvas.height);
      ctx.lineTo(x + canvas.height, 0);
      ctx.stroke();
    }
    ctx.drawImage(img, sides.left, sides.up, this.image.width, this.image.height);
  }

  outpaintSides() {
    const pixels = Number(this.field("outpaint_pixels").value) || 0;
    return Object.fromEntries(this.sideChecks.map((label) => {
      const input = label.querySelector("input");
      return [input.dataset.side, input.checked ? pixels : 0];
    }));
  }

  onImage(image) {
    this.image = image;
    this.imagePreview.src = image.url;
    this.imageElement = new Image();
    this.imageElement.onload = () => this.update();
    this.imageElement.src = image.url;
    this.maskEditor.setImage(image.url, image.width, image.height);
    // Work at the image's own size, scaled down when it is beyond the largest allowed side.
    const max = Number(param("width").max) || 2048;
    const scale = Math.min(1, max / Math.max(image.width, image.height));
    this.setValue("width", roundTo8(image.width * scale));
    this.setValue("height", roundTo8(image.height * scale));
    this.syncPreset();
    clearFieldErrors(this.form);
  }

  // --- values ----------------------------------------------------------------------------

  setValue(name, value) {
    const input = this.field(name);
    if (!input || value === undefined || value === null) return;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = String(value);
    input.dispatchEvent(new Event("change", { bubbles: false }));
  }

  /** The Recipe JSON the form describes (the mask is uploaded separately at submit). */
  recipe() {
    const number = (name) => {
      const text = this.field(name).value.trim();
      return text === "" ? null : Number(text);
    };
    const recipe = {
      mode: this.mode,
      prompt: this.field("prompt").value,
      negative_prompt: this.field("negative_prompt").value,
      model: this.modelSelect.value || null,
      sampler_name: this.samplerSelect.value,
      scheduler: this.scheduleSelect.value,
      steps: number("steps"),
      cfg_scale: number("cfg_scale"),
      seed: number("seed") ?? -1,
      batch_size: number("batch_size"),
      n_iter: number("n_iter"),
      clip_skip: number("clip_skip"),
      subseed: number("subseed") ?? -1,
      subseed_strength: number("subseed_strength"),
      eta: number("eta"),
      eta_noise_seed_delta: number("eta_noise_seed_delta"),
      rng: this.field("rng").value,
      sgm_noise_multiplier: this.field("sgm_noise_multiplier").checked,
      pad_cond_uncond: this.field("pad_cond_uncond").checked,
    };
    if (this.mode !== "outpaint") Object.assign(recipe, { width: number("width"), height: number("height") });
    if (this.mode === "txt2img" && this.field("enable_hr").checked) {
      Object.assign(recipe, {
        enable_hr: true, hr_scale: number("hr_scale"), hr_upscaler: this.field("hr_upscaler").value,
        hr_second_pass_steps: number("hr_second_pass_steps"), denoising_strength: number("denoising_strength"),
      });
    }
    if (!this.distilledField.hidden) recipe.distilled_cfg_scale = number("distilled_cfg_scale");
    const refinerName = this.field("refiner_checkpoint").value;
    if (refinerName && !this.refinerGroup.hidden) {
      Object.assign(recipe, { refiner_checkpoint: refinerName, refiner_switch_at: number("refiner_switch_at") });
    }
    if (this.mode !== "txt2img") {
      Object.assign(recipe, { init_image: this.image?.ref || null, denoising_strength: number("denoising_strength") });
    }
    if (this.mode === "inpaint" || this.mode === "outpaint") {
      Object.assign(recipe, { mask_blur: number("mask_blur"), inpainting_fill: Number(this.field("inpainting_fill").value) });
    }
    if (this.mode === "inpaint") {
      Object.assign(recipe, { inpaint_full_res: this.field("inpaint_full_res").checked, inpaint_full_res_padding: number("inpaint_full_res_padding") });
    }
    if (this.mode === "outpaint") recipe.outpaint = { ...this.outpaintSides(), fill: this.outpaintFill.value };
    if (this.controlUnits.cards?.length) recipe.controls = this.controlUnits.units();
    if (this.referenceImages.cards?.length) recipe.references = this.referenceImages.references();
    // Leave out what the user emptied, so the server's defaults apply.
    return Object.fromEntries(Object.entries(recipe).filter(([, value]) => value !== null && !Number.isNaN(value)));
  }

  /** Fill the form from a Recipe (from the gallery, a dropped PNG or the saved form). */
  fill(recipe, { keepSize = false } = {}) {
    for (const name of TEXT_FIELDS) if (typeof recipe[name] === "string") this.setValue(name, recipe[name]);
    for (const name of NUMBER_FIELDS) {
      if (keepSize && (name === "width" || name === "height")) continue;
      if (typeof recipe[name] === "number") this.setValue(name, recipe[name]);
    }
    for (const name of CHECK_FIELDS) if (typeof recipe[name] === "boolean") this.setValue(name, recipe[name]);
    if (recipe.inpainting_fill !== undefined) this.setValue("inpainting_fill", String(recipe.inpainting_fill));
    if (recipe.rng) this.setValue("rng", recipe.rng);
    if ("eta" in recipe && recipe.eta === null) this.setValue("eta", "");
    if (recipe.model) {
      chooseOption(this.modelSelect, recipe.model);
      this.family = this.currentModel()?.family || null;
      this.onModel(false);
    }
    if (recipe.sampler_name) {
      chooseOption(this.samplerSelect, recipe.sampler_name);
      this.updateSchedules();
    }
    if (recipe.scheduler) chooseOption(this.scheduleSelect, recipe.scheduler);
    if ("refiner_checkpoint" in recipe) {
      this.showRefiners();
      this.field("refiner_checkpoint").value = "";
      chooseOption(this.field("refiner_checkpoint"), recipe.refiner_checkpoint);
    }
    if (!keepSize && (recipe.width === null || recipe.height === null)) {
      const native = this.currentModel()?.native_size || 512;
      this.setValue("width", recipe.width ?? native);
      this.setValue("height", recipe.height ?? native);
    }
    if (recipe.outpaint) {
      const biggest = Math.max(...SIDES.map((s) => recipe.outpaint[s] || 0));
      for (const label of this.sideChecks) {
        const input = label.querySelector("input");
        input.checked = (recipe.outpaint[input.dataset.side] || 0) > 0;
      }
      if (biggest) this.setValue("outpaint_pixels", biggest);
      if (recipe.outpaint.fill) chooseOption(this.outpaintFill, recipe.outpaint.fill);
    }
    if (Array.isArray(recipe.controls)) this.controlUnits.fill(recipe.controls);
    if (Array.isArray(recipe.references)) this.referenceImages.fill(recipe.references);
    this.syncPreset();
    this.update();
  }

  useRecipe(recipe) {
    const needsImage = recipe.mode && recipe.mode !== "txt2img";
    this.fill(recipe);
    this.setMode(needsImage && this.image ? recipe.mode : "txt2img");
    location.hash = "#/generate";
    toast("The form now has that image's settings.");
  }

  async sendTo({ mode, blob, name, recipe }) {
    location.hash = "#/generate";
    if (recipe) this.fill({ ...recipe, seed: -1 }, { keepSize: true });
    this.setMode(mode);
    await this.imageInput.setFile(blob, name);
  }

  reuseSeed() {
    if (this.lastSeed !== null) this.setValue("seed", this.lastSeed);
    this.save();
  }

  save() {
    clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => {
      const { init_image, mask, controls, references, ...recipe } = this.recipe();
      try {
        localStorage.setItem(SAVED_KEY, JSON.stringify({ ...recipe, outpaint_pixels: this.field("outpaint_pixels").value }));
      } catch {
        /* private mode or full storage: the form just is not remembered */
      }
    }, 300);
  }

  restore() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(SAVED_KEY) || "null");
    } catch {
      saved = null;
    }
    if (!saved) return;
    if (saved.model && !this.models.some((m) => m.name === saved.model)) delete saved.model;
    const { mode, outpaint_pixels: pixels, ...recipe } = saved;
    this.fill(recipe);
    if (pixels) this.setValue("outpaint_pixels", pixels);
    if (MODES.some(([name]) => name === mode)) this.mode = mode;
  }

  // --- submitting ------------------------------------------------------------------------

  showError(error) {
    const message = error.detail || String(error);
    const name = (error.field || "").split(".").find((part) => this.form.querySelector(`.field[data-field="${part}"], [data-field="${part}"]`));
    const target = this.referenceImages.showError(error.field, message)
      || (name && (showFieldError(this.form, name, message) || this.showGroupError(name, message)));
    if (target) target.scrollIntoView({ block: "nearest" });
    if (target) target.querySelector("input, select, textarea, button")?.focus({ preventScroll: true });
    this.formError.textContent = message;
    this.formError.hidden = false;
  }

  showGroupError(name, message) {
    const error = this.form.querySelector(`#err-${CSS.escape(name)}`);
    if (!error) return null;
    error.textContent = message;
    error.hidden = false;
    return error.closest("[data-field]");
  }

  async submit() {
    clearFieldErrors(this.form);
    this.formError.hidden = true;
    const recipe = this.recipe();
    try {
      if (this.mode !== "txt2img" && !this.image) {
        throw new ApiError(400, "Choose or drop an input image first.", "init_image");
      }
      if (this.mode === "inpaint") {
        if (!this.maskEditor.hasMask()) throw new ApiError(400, "Paint over the area to change first: the mask is empty.", "mask");
        recipe.mask = (await api.upload(await this.maskEditor.toBlob(), "mask.png")).ref;
      }
      this.controlUnits.check();
      this.referenceImages.check();
      if (this.mode === "outpaint" && !SIDES.some((side) => recipe.outpaint[side])) {
        throw new ApiError(400, "Choose at least one side to extend and a number of pixels.", "outpaint");
      }
      this.submitButton.disabled = true;
      const fast = !this.decoderField.hidden && this.decoderSelect.value === "fast";
      const job = await api.post(fast ? "/api/jobs?vae_decode=fast" : "/api/jobs", recipe);
      this.addCard(job);
    } catch (error) {
      this.showError(error);
    } finally {
      this.submitButton.disabled = this.models.length === 0;
    }
  }

  jumpToResults(event) {
    event.preventDefault(); // the hash belongs to the router
    const title = this.section.querySelector("#output-title");
    title.scrollIntoView({ block: "start" });
    title.focus();
  }

  addCard(job) {
    const card = new JobCard(job, {
      onDone: (finished) => {
        const seeds = finished.result?.seeds || [];
        if (finished.status === "done" && seeds.length) {
          this.lastSeed = seeds[0];
          this.reuseButton.disabled = false;
          this.reuseButton.setAttribute("aria-label", `Reuse last seed (${seeds[0]})`);
        }
      },
      onOpen: (id, ids) => openViewer(id, { ids }),
    });
    this.emptyOutput.hidden = true;
    this.jobList.prepend(card.el);
    while (this.jobList.children.length > MAX_CARDS) this.jobList.lastElementChild.remove();
  }
}

