// The comic editor's right column: the selected panel's scene, its composed prompt (shown and editable),
// candidates (generate, pick, drag into a panel, inpaint, explain), image framing, layout tools, and balloons.

import { api } from "./api.js";
import { h } from "./dom.js";
import { JobCard } from "./job-view.js";
import { KINDS, HAS_TAIL, newBalloon } from "./comic-balloons.js";
import { bbox, innerBox, neighbour, readingOrder } from "./comic-geometry.js";
import { CANDIDATE_MIME } from "./comic-page.js";
import { bound, labelled, newId } from "./comic-form.js";

const SHOTS = [["close-up", "Close-up"], ["medium", "Medium"], ["wide", "Wide"], ["over-the-shoulder", "Over the shoulder"], ["bird's-eye", "Bird's-eye"]];
// As comic/prompts.py SHOT_PHRASES: the words each shot adds to the prompt.
const SHOT_PHRASES = { "close-up": "close-up shot", medium: "medium shot", wide: "wide shot, full body",
  "over-the-shoulder": "over-the-shoulder shot", "bird's-eye": "bird's-eye view, seen from above" };
const SIDES = [["left", "left"], ["right", "right"], ["top", "above"], ["bottom", "below"]];
const jobCards = new Map();

/** The prompt the server composes (comic/prompts.py compose_prompt), for a live preview while typing. */
/** A balloon's button in the sidebar list: its number and the start of its text (or its kind). */
function balloonLabel(balloon, index) {
  return `${index + 1}. ${balloon.text.slice(0, 18) || KINDS.find(([k]) => k === balloon.kind)[1]}`;
}

export function composePrompt(project, panel) {
  const parts = [project.style.prefix, SHOT_PHRASES[panel.shot]];
  for (const name of panel.characters) parts.push(project.characters.find((c) => c.name === name)?.description || "");
  parts.push(panel.action, panel.setting, project.style.suffix);
  return parts.map((p) => (p || "").trim().replace(/^,+|,+$/g, "").trim()).filter(Boolean).join(", ");
}

export class PanelSidebar {
  constructor(host) {
    this.host = host;
    this.el = h("div", { class: "comic-sidebar" });
    this.error = h("p", { class: "form-error", role: "alert", hidden: true });
  }

  get project() {
    return this.host.project;
  }

  render() {
    const panel = this.host.panel();
    if (!panel) {
      this.el.replaceChildren(h("p", { class: "empty" }, "Select a panel on the page."));
      return;
    }
    // A redraw (say, when a candidate arrives) keeps the caret where the user is typing.
    const active = this.el.contains(document.activeElement) ? document.activeElement : null;
    const caret = active && "selectionStart" in active ? [active.id, active.selectionStart, active.selectionEnd] : null;
    const order = readingOrder(this.host.page().panels, (p) => bbox(p.shape), this.project.direction);
    this.el.replaceChildren(
      h("h2", { id: "comic-panel-title" }, `Panel ${order.indexOf(panel) + 1}`),
      this.sceneSection(panel), this.promptSection(panel), this.candidateSection(panel), this.viewSection(panel),
      this.layoutSection(panel), this.balloonSection(panel));
    const again = caret?.[0] && this.el.querySelector(`#${CSS.escape(caret[0])}`);
    if (again) {
      again.focus({ preventScroll: true });
      try {
        again.setSelectionRange(caret[1], caret[2]);
      } catch {
        /* number inputs have no caret */
      }
    }
  }

  // --- scene and prompt ------------------------------------------------------------------

  sceneSection(panel) {
    const changed = () => this.host.changed("prompt", false);
    const chips = this.project.characters.map((c) => {
      const box = h("input", { type: "checkbox", checked: panel.characters.includes(c.name) });
      box.addEventListener("change", () => {
        panel.characters = box.checked ? [...panel.characters, c.name] : panel.characters.filter((n) => n !== c.name);
        changed();
      });
      return h("label", { class: "chip" }, box, ` ${c.name}`);
    });
    const shot = h("select", { id: "comic-shot" }, ...SHOTS.map(([v, t]) => h("option", { value: v }, t)));
    shot.value = panel.shot;
    shot.addEventListener("change", () => {
      panel.shot = shot.value;
      changed();
    });
    return h("section", { class: "group" },
      labelled("Setting", bound(panel, "setting", changed, { rows: 2, id: "comic-setting", placeholder: "a rainy street at night" })),
      labelled("Action", bound(panel, "action", changed, { rows: 2, id: "comic-action", placeholder: "Mia finds a small robot" })),
      h("div", { class: "field" }, h("span", { class: "label" }, "Characters in this panel"),
        chips.length ? h("div", { class: "chips", role: "group", "aria-label": "Characters in this panel" }, ...chips)
          : h("p", { class: "hint" }, "Add characters under Cast to choose them here.")),
      labelled("Shot", shot));
  }

  promptSection(panel) {
    this.promptBox = h("textarea", { id: "comic-prompt", rows: 5 });
    this.promptLabel = h("label", { for: "comic-prompt", class: "label" });
    this.resetButton = h("button", { type: "button", id: "comic-prompt-reset", onclick: () => {
      panel.prompt_override = null;
      this.host.changed("prompt", false);
    } }, "Reset to composed");
    this.promptBox.addEventListener("input", () => {
      const text = this.promptBox.value;
      panel.prompt_override = text.trim() && text !== composePrompt(this.project, panel) ? text : null;
      this.host.changed("prompt", false);
    });
    this.refreshPrompt();
    return h("section", { class: "group" }, h("div", { class: "field" }, this.promptLabel, this.promptBox,
      h("p", { class: "hint" }, "Composed from the style, the shot, each character's description, the action and the setting. Edit it to use your own words for this panel."),
      this.resetButton));
  }

  /** Show the prompt the panel will be generated from; leave it alone while the user types in it. */
  refreshPrompt() {
    const panel = this.host.panel();
    if (!panel || !this.promptBox) return;
    const own = Boolean(panel.prompt_override);
    if (document.activeElement !== this.promptBox) this.promptBox.value = own ? panel.prompt_override : composePrompt(this.project, panel);
    this.promptLabel.textContent = own ? "Prompt (your own words)" : "Prompt (composed)";
    this.resetButton.disabled = !own;
  }

  // --- candidates ------------------------------------------------------------------------

  candidateSection(panel) {
    const count = h("input", { type: "number", id: "comic-candidates", min: 1, max: 8, value: 2 });
    count.value = this.lastCount || 2;
    const button = h("button", { type: "button", class: "primary", id: "comic-generate" });
    const again = panel.candidates.length > 0;
    const label = () => {
      const n = Number(count.value) || 1;
      button.textContent = `${again ? "Regenerate: " : "Generate "}${n} ${again ? "more " : ""}candidate${n === 1 ? "" : "s"}`;
    };
    label();
    count.addEventListener("input", label);
    button.addEventListener("click", async () => {
      this.lastCount = Math.max(1, Math.min(8, Number(count.value) || 1));
      this.error.hidden = true;
      button.disabled = true;
      await this.host.generate(panel, this.lastCount);
      button.disabled = false;
    });
    const pending = panel.candidates.filter((c) => !c.image && c.job_id !== null && !c.error);
    const jobs = h("div", { class: "job-list comic-jobs" }, ...pending.map((c) => this.jobCard(c).el));
    const ready = panel.candidates.filter((c) => c.image || c.error);
    const grid = h("ul", { class: "comic-candidates", "aria-label": "Candidates" }, ...ready.map((c, i) => this.candidateTile(panel, c, i)));
    return h("section", { class: "group", "aria-labelledby": "comic-candidates-title" },
      h("h3", { id: "comic-candidates-title" }, "Candidates"),
      h("div", { class: "row" }, labelled("How many", count), button), this.error, jobs,
      ready.length ? grid : h("p", { class: "hint" }, "Generated images appear here. Pick one, or drag it onto any panel."),
      this.posePart(panel));
  }

  jobCard(candidate) {
    let card = jobCards.get(candidate.job_id);
    if (!card) {
      card = new JobCard({ id: candidate.job_id, status: "queued", recipe: candidate.recipe }, {
        onDone: () => {
          jobCards.delete(candidate.job_id);
          this.host.refresh();
        },
      });
      jobCards.set(candidate.job_id, card);
    }
    return card;
  }

  candidateTile(panel, candidate, i) {
    const chosen = panel.chosen === candidate.id;
    if (candidate.error) {
      return h("li", { class: "candidate failed" }, h("p", { class: "job-error" }, candidate.error),
        h("button", { type: "button", onclick: () => this.remove(panel, candidate) }, "Remove"));
    }
    const img = h("img", { src: this.host.assetUrl(candidate.image), alt: `Candidate ${i + 1}`, draggable: true });
    img.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData(CANDIDATE_MIME, JSON.stringify({ candidate }));
      event.dataTransfer.effectAllowed = "copy";
    });
    return h("li", { class: `candidate${chosen ? " chosen" : ""}`, dataset: { candidate: candidate.id } }, img,
      h("div", { class: "candidate-actions" },
        h("button", { type: "button", "aria-pressed": String(chosen), class: "pick", onclick: () => {
          panel.chosen = candidate.id;
          this.host.changed("candidate");
        } }, chosen ? "In the panel" : "Use"),
        this.placeSelect(panel, candidate, i),
        h("button", { type: "button", onclick: () => this.host.sendToInpaint(candidate) }, "Inpaint…"),
        candidate.job_id !== null ? h("button", { type: "button", class: "link", onclick: () => this.host.explain(candidate) }, "Why this image?") : null,
        h("button", { type: "button", class: "icon danger", "aria-label": `Remove candidate ${i + 1}`, onclick: () => this.remove(panel, candidate) }, "×")));
  }

  /** The keyboard's way to do what dragging a thumbnail onto a panel does. */
  placeSelect(panel, candidate, i) {
    const order = readingOrder(this.host.page().panels, (p) => bbox(p.shape), this.project.direction);
    const others = order.map((p, n) => [p, n + 1]).filter(([p]) => p !== panel);
    if (!others.length) return null;
    const select = h("select", { "aria-label": `Put candidate ${i + 1} in another panel` },
      h("option", { value: "" }, "Put in panel…"), ...others.map(([p, n]) => h("option", { value: p.id }, `Panel ${n}`)));
    select.addEventListener("change", () => {
      if (select.value) this.host.dropCandidate(select.value, { candidate });
    });
    return select;
  }

  remove(panel, candidate) {
    panel.candidates = panel.candidates.filter((c) => c !== candidate);
    if (panel.chosen === candidate.id) panel.chosen = panel.candidates.find((c) => c.image)?.id || null;
    this.host.changed("candidate");
  }

  /** A pose for the panel, drawn in the pose editor, becomes an OpenPose ControlNet unit (when the studio has one). */
  posePart(panel) {
    if (!customElements.get("ld-pose-editor")) return null;
    const units = panel.controls.length;
    return h("p", { class: "hint" }, units ? `${units} ControlNet unit${units === 1 ? "" : "s"} steer this panel. ` : "",
      h("button", { type: "button", onclick: () => this.openPose(panel) }, "Pose…"),
      units ? h("button", { type: "button", onclick: () => { panel.controls = []; this.host.changed("controls"); } }, "Clear") : null);
  }

  /** The pose editor at the panel's proportions; its map becomes an OpenPose unit ('Automatic' model when
   * no installed ControlNet has "pose" in its name). */
  async openPose(panel) {
    const box = bbox(panel.shape);
    const side = (v) => Math.max(64, Math.round(v / 8) * 8);
    const size = [side(512 * Math.sqrt(box.w / box.h)), side(512 * Math.sqrt(box.h / box.w))];
    const editor = h("ld-pose-editor");
    const dialog = h("dialog", { class: "pose-dialog", "aria-label": "Pose for this panel" },
      h("div", { class: "viewer-head" }, h("h2", {}, "Pose for this panel"),
        h("button", { type: "button", class: "close", "aria-label": "Close", onclick: () => dialog.close() }, "×")),
      h("div", { class: "pose-dialog-body" }, editor));
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    editor.open({ size });
    dialog.showModal();
    const models = await api.get("/api/models?kind=controlnet").catch(() => []);
    editor.addEventListener("use", (event) => {
      const model = models.find((m) => /pose/i.test(m.name))?.name || "";
      panel.controls = [...panel.controls, { model, image: event.detail.ref, module: "none", weight: 1 }];
      dialog.close();
      this.host.changed("controls");
    });
  }

  showError(error) {
    this.error.textContent = error.detail || String(error);
    this.error.hidden = false;
  }

  // --- framing ---------------------------------------------------------------------------

  /** After a pan or a wheel zoom on the page, the zoom slider follows. */
  syncView() {
    const zoom = this.el.querySelector("#comic-zoom");
    const panel = this.host.panel();
    if (zoom && panel && document.activeElement !== zoom) zoom.value = panel.view.zoom;
  }

  viewSection(panel) {
    if (!panel.candidates.some((c) => c.id === panel.chosen && c.image)) return h("section");
    const zoom = h("input", { type: "range", id: "comic-zoom", min: 1, max: 8, step: 0.05, value: panel.view.zoom });
    zoom.value = panel.view.zoom;
    zoom.addEventListener("input", () => {
      panel.view = { ...panel.view, zoom: Number(zoom.value) };
      this.host.changed("view", true);
    });
    const fit = h("select", { id: "comic-fit" }, h("option", { value: "cover" }, "Fill the panel (crop)"), h("option", { value: "contain" }, "Show it whole"));
    fit.value = panel.view.fit;
    fit.addEventListener("change", () => {
      panel.view = { ...panel.view, fit: fit.value };
      this.host.changed("view", true);
    });
    return h("section", { class: "group" }, h("h3", {}, "Image in the panel"),
      h("div", { class: "row" }, labelled("Fit", fit), labelled("Zoom", zoom),
        h("button", { type: "button", onclick: () => {
          panel.view = { fit: "cover", zoom: 1, x: 0.5, y: 0.5 };
          this.host.changed("view");
        } }, "Reset")),
      h("p", { class: "hint" }, "Drag inside the selected panel to move the image; the mouse wheel zooms."));
  }

  // --- layout ----------------------------------------------------------------------------

  layoutSection(panel) {
    const host = this.host;
    const panels = host.page().panels;
    const merges = SIDES.map(([side, word]) => {
      const other = neighbour(panels, panel, side);
      return h("button", { type: "button", disabled: !other, dataset: { merge: side },
        onclick: () => host.layout({ op: "merge", panel: panel.id, other: other.id }) }, `Merge ${word}`);
    });
    const side = h("select", { id: "comic-slant-side", "aria-label": "Border to slant" }, ...SIDES.map(([s]) => h("option", { value: s }, `${s} border`)));
    side.value = "bottom";
    const amount = h("input", { type: "number", id: "comic-slant", step: 1, value: 8, "aria-label": "Slant (mm)" });
    amount.value = 8;
    return h("section", { class: "group" }, h("h3", {}, "Layout"),
      h("div", { class: "row" },
        h("button", { type: "button", id: "comic-split-h", onclick: () => host.layout({ op: "split", panel: panel.id, direction: "horizontal" }) }, "Split top / bottom"),
        h("button", { type: "button", id: "comic-split-v", onclick: () => host.layout({ op: "split", panel: panel.id, direction: "vertical" }) }, "Split left / right")),
      h("div", { class: "row" }, ...merges),
      h("div", { class: "row" }, side, amount,
        h("button", { type: "button", id: "comic-slant-apply", onclick: () => host.layout({ op: "slant", panel: panel.id, side: side.value, amount_mm: Number(amount.value) || 0 }) }, "Slant")),
      h("p", { class: "hint" }, "Slanting tilts the border about its middle by that many millimetres; the panel beside it follows."));
  }

  // --- balloons --------------------------------------------------------------------------

  balloonSection(panel) {
    const add = KINDS.map(([kind, label]) => h("button", { type: "button", dataset: { addBalloon: kind }, onclick: () => {
      const balloon = newBalloon(kind, innerBox(panel.shape), newId(),
        { index: panel.balloons.length, rtl: this.project.direction === "rtl" });
      panel.balloons.push(balloon);
      this.host.selection = { panel: panel.id, balloon: balloon.id };
      this.host.changed("balloon");
      // The new balloon is selected on the page: Enter opens its text there, as for any selected balloon.
      this.host.editor.svg.focus();
    } }, label));
    const selected = panel.balloons.find((b) => b.id === this.host.selection.balloon);
    const list = panel.balloons.map((b, i) => h("button", { type: "button", "aria-pressed": String(b === selected),
      dataset: { balloon: b.id }, onclick: () => this.host.select({ panel: panel.id, balloon: b.id }) }, balloonLabel(b, i)));
    return h("section", { class: "group" }, h("h3", {}, "Lettering"),
      h("div", { class: "chips", role: "group", "aria-label": "Add lettering" }, ...add),
      list.length ? h("div", { class: "chips" }, ...list) : null,
      selected ? this.balloonEditor(panel, selected) : null);
  }

  /** After typing (here or in the balloon on the page): the balloon list's labels and the text box follow. */
  refreshBalloons() {
    const panel = this.host.page()?.panels.find((p) => p.id === this.host.selection.panel);
    if (!panel) return;
    panel.balloons.forEach((b, i) => {
      const chip = this.el.querySelector(`[data-balloon="${CSS.escape(b.id)}"]`);
      if (chip) chip.textContent = balloonLabel(b, i);
    });
    const text = this.el.querySelector("#comic-balloon-text");
    const selected = panel.balloons.find((b) => b.id === this.host.selection.balloon);
    if (text && selected && document.activeElement !== text && text.value !== selected.text) text.value = selected.text;
  }

  balloonEditor(panel, balloon) {
    const changed = () => this.host.changed("text", true);
    const kind = h("select", { id: "comic-balloon-kind" }, ...KINDS.map(([k, t]) => h("option", { value: k }, t)));
    kind.value = balloon.kind;
    kind.addEventListener("change", () => {
      balloon.kind = kind.value;
      if (HAS_TAIL.has(balloon.kind) && !balloon.tail) balloon.tail = { x: balloon.box.x + balloon.box.w / 2, y: balloon.box.y + balloon.box.h * 1.6 };
      if (!HAS_TAIL.has(balloon.kind)) balloon.tail = null;
      this.host.changed("balloon");
    });
    const speaker = h("select", { id: "comic-balloon-speaker" }, h("option", { value: "" }, "Nobody in particular"),
      ...this.project.characters.map((c) => h("option", { value: c.name }, c.name)));
    speaker.value = balloon.speaker || "";
    speaker.addEventListener("change", () => {
      balloon.speaker = speaker.value || null;
      this.host.changed("balloon");
    });
    const size = h("input", { type: "number", min: 4, max: 200, step: 0.5, placeholder: "as large as fits", id: "comic-balloon-size" });
    size.value = balloon.font_size ?? "";
    size.addEventListener("change", () => {
      balloon.font_size = size.value.trim() === "" ? null : Math.min(200, Math.max(4, Number(size.value)));
      changed();
    });
    const rotation = h("input", { type: "range", min: -180, max: 180, step: 1, id: "comic-balloon-rotation" });
    rotation.value = balloon.rotation;
    rotation.addEventListener("input", () => {
      balloon.rotation = Number(rotation.value);
      changed();
    });
    const outline = h("input", { type: "number", min: 0, max: 5, step: 0.1, id: "comic-balloon-outline" });
    outline.value = balloon.outline;
    outline.addEventListener("change", () => {
      balloon.outline = Math.min(5, Math.max(0, Number(outline.value) || 0));
      changed();
    });
    return h("div", { class: "balloon-editor-panel" },
      labelled("Text", bound(balloon, "text", changed, { rows: 3, id: "comic-balloon-text" })),
      h("div", { class: "row" }, labelled("Kind", kind), labelled("Speaker", speaker)),
      h("div", { class: "row" }, labelled("Text size (pt)", size), labelled("Outline (mm)", outline)),
      balloon.kind === "sfx" ? labelled("Rotation", rotation) : null,
      h("p", { class: "hint" }, "Drag the balloon to place it, its square corner to size it and the round tip to point its tail at the speaker. The text sizes itself to fit."),
      h("button", { type: "button", class: "danger", onclick: () => {
        panel.balloons = panel.balloons.filter((b) => b !== balloon);
        this.host.selection = { panel: panel.id, balloon: null };
        this.host.changed("balloon");
      } }, "Delete this balloon"));
  }
}
