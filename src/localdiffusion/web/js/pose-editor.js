// <ld-pose-editor>: an OpenPose skeleton editor (SVG) over an optional reference photo.
//
// Drag a joint to move it, drag a limb to move the whole person; the arrow keys nudge the selected
// joint. The pose is OpenPose JSON (18 COCO points per person, confidence 0 = a hidden joint), the
// format the server renders (/api/poses/render) into the exact ControlNet map. "Use in ControlNet
// unit" renders it and fires "use" with {ref, url, width, height, pose}.

import { api, cached } from "./api.js";
import { h, needsLargerScreen, uid } from "./dom.js";
import { t } from "./i18n.js";

const JOINTS = ["Nose", "Neck", "Right shoulder", "Right elbow", "Right wrist", "Left shoulder", "Left elbow", "Left wrist",
  "Right hip", "Right knee", "Right ankle", "Left hip", "Left knee", "Left ankle", "Right eye", "Left eye", "Right ear", "Left ear"];
// The limbs ControlNet draws (0-based joint pairs) and the colour of limb/joint i, as the server's renderer uses them.
const LIMBS = [[1, 2], [1, 5], [2, 3], [3, 4], [5, 6], [6, 7], [1, 8], [8, 9], [9, 10], [1, 11], [11, 12], [12, 13],
  [1, 0], [0, 14], [14, 16], [0, 15], [15, 17]];
const COLOURS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
  [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255], [170, 0, 255],
  [255, 0, 255], [255, 0, 170], [255, 0, 85]];
// Each joint's mirror twin: left and right swap when a person turns around.
const MIRROR = JOINTS.map((name) => JOINTS.indexOf(
  name.replace("Left", "@").replace("Right", "Left").replace("@", "Right")));
const SIZES = [[512, 512], [512, 768], [768, 512], [768, 768], [1024, 1024], [832, 1216], [1216, 832]];
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

const rgb = ([r, g, b], k = 1) => `rgb(${Math.floor(r * k)} ${Math.floor(g * k)} ${Math.floor(b * k)})`;
const round1 = (v) => Math.round(v * 10) / 10;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/** The mean of a person's shown joints: the pivot for mirroring, scaling and rotating. */
function centre(points) {
  const shown = points.filter((p) => p[2] > 0);
  if (!shown.length) return [0, 0];
  return [shown.reduce((s, p) => s + p[0], 0) / shown.length, shown.reduce((s, p) => s + p[1], 0) / shown.length];
}

/** Move every shown joint through `f(x, y) -> [x, y]`; hidden joints stay where they are. */
function moved(points, f) {
  return points.map(([x, y, c]) => (c > 0 ? [...f(x, y), c] : [x, y, c]));
}

/** How a canvas of `from` size maps into one of `to` size: uniform scale, centred. */
function fitting([fw, fh], [tw, th]) {
  const k = Math.min(tw / fw, th / fh);
  return { k, dx: (tw - fw * k) / 2, dy: (th - fh * k) / 2 };
}

/** People from OpenPose JSON (a list around it, normalised 0-1 points and face-only entries are accepted too). */
export function parsePose(data) {
  if (Array.isArray(data)) {
    if (data.length !== 1) throw new Error(`The file holds ${data.length} poses; give a single pose.`);
    data = data[0];
  }
  const width = Number(data?.canvas_width);
  const height = Number(data?.canvas_height);
  if (!(width >= 1 && height >= 1)) throw new Error("The pose JSON has no canvas_width and canvas_height.");
  if (!Array.isArray(data.people)) throw new Error("The pose JSON has no 'people' list.");
  const people = [];
  for (const [n, person] of data.people.entries()) {
    const values = person?.pose_keypoints_2d;
    if (!values || !values.length) continue;
    if (values.length !== 54 || !values.every((v) => typeof v === "number" && Number.isFinite(v))) {
      throw new Error(`Person ${n + 1} needs 54 numbers in pose_keypoints_2d (x, y, confidence for 18 points).`);
    }
    people.push(Array.from({ length: 18 }, (_, i) => values.slice(3 * i, 3 * i + 3)));
  }
  const shown = people.flat().filter((p) => p[2] > 0).flatMap((p) => [p[0], p[1]]);
  const normalised = shown.length > 0 && shown.every((v) => v >= 0 && v <= 1);
  return {
    width, height,
    people: normalised ? people.map((p) => moved(p, (x, y) => [x * width, y * height])) : people,
  };
}

class PoseEditor extends HTMLElement {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.width = 512;
    this.height = 512;
    this.people = [];
    this.person = 0;
    this.joint = 1;
    this.photo = null; // {url, x, y, width, height} in canvas pixels
    this.presets = [];
    this.build();
    this.loadPresets();
  }

  // --- building ----------------------------------------------------------------------------

  build() {
    const ids = { size: uid("pose-size"), preset: uid("pose-preset"), person: uid("pose-person"), joint: uid("pose-joint"),
      scale: uid("pose-scale"), rotate: uid("pose-rotate"), opacity: uid("pose-opacity"), keys: uid("pose-keys") };
    this.sizeSelect = h("select", { id: ids.size, onchange: () => this.onSize() });
    this.presetSelect = h("select", { id: ids.preset, onchange: () => this.onPreset() });
    this.personSelect = h("select", { id: ids.person, onchange: () => this.select(Number(this.personSelect.value), this.joint) });
    this.jointSelect = h("select", { id: ids.joint, onchange: () => this.select(this.person, Number(this.jointSelect.value)) });
    this.hideButton = h("button", { type: "button", onclick: () => this.toggleJoint() }, "Hide joint");
    this.scaleRange = h("input", { type: "range", id: ids.scale, min: "50", max: "200", step: "1", value: "100" });
    this.rotateRange = h("input", { type: "range", id: ids.rotate, min: "-180", max: "180", step: "1", value: "0" });
    this.scaleOut = h("output", { for: ids.scale }, "100%");
    this.rotateOut = h("output", { for: ids.rotate }, "0°");
    this.bindTransform(this.scaleRange, this.scaleOut, (v) => `${v}%`, (points, v) => this.scaled(points, v / 100), 100);
    this.bindTransform(this.rotateRange, this.rotateOut, (v) => `${v}°`, (points, v) => this.rotated(points, v), 0);
    this.opacityRange = h("input", { type: "range", id: ids.opacity, min: "0", max: "1", step: "0.05", value: "0.5",
      oninput: () => this.render() });

    this.photoFile = this.fileInput("pose-photo", "image/*", (file) => this.detectFrom(file));
    this.referenceFile = this.fileInput("pose-reference", "image/*", (file) => this.setReference(file));
    this.jsonFile = this.fileInput("pose-json", "application/json,.json", (file) => this.loadJson(file));

    this.canvas = svg("svg", { class: "pose-canvas", tabindex: "0", role: "application",
      "aria-label": "Pose canvas", "aria-describedby": ids.keys });
    this.canvas.addEventListener("keydown", (event) => this.onKey(event));
    this.bindPointer();
    this.where = h("p", { class: "pose-where", "aria-live": "polite" });
    this.status = h("p", { class: "pose-status", role: "status", "aria-live": "polite" });
    this.useButton = h("button", { type: "button", class: "primary", onclick: () => this.use() }, "Use in ControlNet unit");

    const group = (label, ...children) => h("div", { class: "pose-group", role: "group", "aria-label": label }, ...children);
    const labelled = (id, text, control, ...more) => h("span", { class: "pose-control" }, h("label", { for: id }, text), control, ...more);
    const tools = h("div", { class: "pose-tools" },
      group("Canvas and presets", labelled(ids.size, "Canvas size", this.sizeSelect), labelled(ids.preset, "Preset pose", this.presetSelect)),
      group("People", labelled(ids.person, "Person", this.personSelect),
        h("button", { type: "button", onclick: () => this.addPerson() }, "Add person"),
        h("button", { type: "button", onclick: () => this.duplicate() }, "Duplicate"),
        h("button", { type: "button", class: "danger", onclick: () => this.removePerson() }, "Remove person"),
        h("button", { type: "button", onclick: () => this.mirror() }, "Mirror")),
      group("Scale and turn", labelled(ids.scale, "Scale", this.scaleRange, this.scaleOut),
        labelled(ids.rotate, "Rotate", this.rotateRange, this.rotateOut)),
      group("Selected joint", labelled(ids.joint, "Joint", this.jointSelect), this.hideButton),
      group("Reference photo", this.photoFile.label("Load pose from a photo…"), this.referenceFile.label("Reference photo…"),
        labelled(ids.opacity, "Photo opacity", this.opacityRange),
        h("button", { type: "button", onclick: () => this.setReference(null) }, "Remove photo")),
      group("Pose file", h("button", { type: "button", onclick: () => this.saveJson() }, "Save JSON"), this.jsonFile.label("Load JSON…")));
    const keys = h("p", { class: "hint", id: ids.keys },
      "Drag a joint to move it, or a limb to move the whole person. With the canvas focused: arrow keys move the selected "
      + "joint (Shift: 10 pixels), [ and ] choose the previous or next joint, H hides or shows it.");
    this.append(needsLargerScreen(t("editor.poseNeedsRoom")), tools, h("div", { class: "pose-stage" }, this.canvas), this.where, keys,
      h("div", { class: "pose-footer" }, this.useButton, this.status));
    this.setSizes();
  }

  /** A hidden file input and a button-like label that opens it. */
  fileInput(prefix, accept, onFile) {
    const id = uid(prefix);
    const input = h("input", { type: "file", id, accept, class: "visually-hidden" });
    input.addEventListener("change", () => {
      const file = input.files[0];
      input.value = "";
      if (file) onFile(file);
    });
    return { input, label: (text) => h("span", {}, h("label", { for: id, class: "button" }, text), input) };
  }

  /** A slider that transforms the selected person live from where it was when the slide began. */
  bindTransform(range, output, show, apply, neutral) {
    let start = null;
    range.addEventListener("input", () => {
      const points = this.people[this.person];
      if (!points) return;
      start ||= points.map((p) => [...p]);
      this.people[this.person] = apply(start, Number(range.value));
      output.textContent = show(range.value);
      this.render();
    });
    range.addEventListener("change", () => {
      start = null;
      range.value = String(neutral);
      output.textContent = show(neutral);
      this.changed();
    });
  }

  async loadPresets() {
    try {
      this.presets = await cached("/api/poses/presets");
    } catch (error) {
      this.say(error.detail);
    }
    this.presetSelect.replaceChildren(h("option", { value: "" }, "Choose a preset…"),
      ...this.presets.map((p) => h("option", { value: p.name }, p.label)));
    if (!this.people.length && !this.opened) this.reset();
  }

  setSizes() {
    const sizes = [...SIZES];
    if (!sizes.some(([w, hh]) => w === this.width && hh === this.height)) sizes.unshift([this.width, this.height]);
    this.sizeSelect.replaceChildren(...sizes.map(([w, hh]) => h("option", { value: `${w}x${hh}` }, `${w} × ${hh}`)));
    this.sizeSelect.value = `${this.width}x${this.height}`;
  }

  // --- the pose ----------------------------------------------------------------------------

  /** The pose as OpenPose JSON (hidden joints are written as 0, 0, 0). */
  get pose() {
    return {
      people: this.people.map((points) => ({
        pose_keypoints_2d: points.flatMap(([x, y, c]) => (c > 0 ? [round1(x), round1(y), c] : [0, 0, 0])),
      })),
      canvas_width: this.width,
      canvas_height: this.height,
    };
  }

  /** Start editing `pose` (OpenPose JSON) on a canvas of its size; without a pose, a standing figure at `size`. */
  open({ pose = null, size = null } = {}) {
    this.opened = true;
    this.setReference(null);
    if (pose) {
      const parsed = parsePose(pose);
      this.width = parsed.width;
      this.height = parsed.height;
      this.people = parsed.people;
    } else {
      [this.width, this.height] = size || [512, 512];
      this.reset();
    }
    this.setSizes();
    this.select(0, 1);
  }

  /** One standing figure (the first preset that has someone). */
  reset() {
    const preset = this.presets.find((p) => p.name === "standing") || this.presets[0];
    this.people = preset ? this.fitted(parsePose(preset.pose)) : [];
    this.select(0, 1);
  }

  /** The people of a parsed pose, moved onto this canvas (uniform scale, centred). */
  fitted(parsed) {
    const { k, dx, dy } = fitting([parsed.width, parsed.height], [this.width, this.height]);
    return parsed.people.map((p) => moved(p, (x, y) => [x * k + dx, y * k + dy]));
  }

  onPreset() {
    const preset = this.presets.find((p) => p.name === this.presetSelect.value);
    this.presetSelect.value = "";
    if (!preset) return;
    this.people = this.fitted(parsePose(preset.pose));
    this.select(0, this.joint);
    this.say(`Loaded the ${preset.label.toLowerCase()} pose.`);
  }

  onSize() {
    const [width, height] = this.sizeSelect.value.split("x").map(Number);
    const { k, dx, dy } = fitting([this.width, this.height], [width, height]);
    this.people = this.people.map((p) => moved(p, (x, y) => [x * k + dx, y * k + dy]));
    if (this.photo) {
      Object.assign(this.photo, { x: this.photo.x * k + dx, y: this.photo.y * k + dy,
        width: this.photo.width * k, height: this.photo.height * k });
    }
    this.width = width;
    this.height = height;
    this.changed();
  }

  select(person, joint) {
    this.person = clamp(person, 0, Math.max(0, this.people.length - 1));
    this.joint = clamp(joint ?? 1, 0, 17);
    this.changed();
  }

  changed() {
    this.personSelect.replaceChildren(...this.people.map((_, i) => h("option", { value: i }, `Person ${i + 1}`)));
    this.personSelect.value = String(this.person);
    const points = this.people[this.person] || [];
    this.jointSelect.replaceChildren(...JOINTS.map((name, i) => h("option", { value: i },
      points[i] && points[i][2] <= 0 ? `${name} (hidden)` : name)));
    this.jointSelect.value = String(this.joint);
    const hidden = points[this.joint] && points[this.joint][2] <= 0;
    this.hideButton.textContent = hidden ? "Show joint" : "Hide joint";
    this.hideButton.disabled = !points.length;
    this.setSizes();
    this.render();
    this.dispatchEvent(new CustomEvent("posechange"));
  }

  addPerson() {
    const preset = this.presets.find((p) => p.name === "standing");
    if (!preset) return;
    const person = this.fitted(parsePose(preset.pose))[0];
    // A little to one side of the others, so the new one is easy to grab.
    const shift = (this.width / 6) * (this.people.length % 2 ? -1 : 1);
    this.people.push(this.scaled(moved(person, (x, y) => [x + shift, y]), 0.8));
    this.select(this.people.length - 1, this.joint);
  }

  duplicate() {
    const points = this.people[this.person];
    if (!points) return;
    this.people.push(moved(points, (x, y) => [x + this.width / 10, y]));
    this.select(this.people.length - 1, this.joint);
  }

  removePerson() {
    if (!this.people.length) return;
    this.people.splice(this.person, 1);
    this.select(this.person - 1, this.joint);
  }

  /** Turn the person around in place: flip about its own centre, left and right joints swap. */
  mirror() {
    const points = this.people[this.person];
    if (!points) return;
    const [cx] = centre(points);
    const flipped = moved(points, (x, y) => [2 * cx - x, y]);
    this.people[this.person] = MIRROR.map((i) => flipped[i]);
    this.changed();
  }

  scaled(points, factor) {
    const [cx, cy] = centre(points);
    return moved(points, (x, y) => [cx + (x - cx) * factor, cy + (y - cy) * factor]);
  }

  rotated(points, degrees) {
    const [cx, cy] = centre(points);
    const [cos, sin] = [Math.cos((degrees * Math.PI) / 180), Math.sin((degrees * Math.PI) / 180)];
    return moved(points, (x, y) => [cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos]);
  }

  /** Hide the selected joint (confidence 0: not drawn, not used), or show it again where it was or by its neighbour. */
  toggleJoint() {
    const points = this.people[this.person];
    if (!points) return;
    const point = points[this.joint];
    if (point[2] > 0) {
      point[2] = 0;
    } else {
      if (point[0] === 0 && point[1] === 0) {
        const [cx, cy] = centre(points);
        [point[0], point[1]] = [cx + 12, cy];
      }
      point[2] = 1;
    }
    this.changed();
  }

  // --- drawing -----------------------------------------------------------------------------

  render() {
    const c = this.canvas;
    c.setAttribute("viewBox", `0 0 ${this.width} ${this.height}`);
    c.style.aspectRatio = `${this.width} / ${this.height}`;
    const scale = Math.max(this.width, this.height) / 512; // joints stay grabbable on large canvases
    const parts = [svg("rect", { width: this.width, height: this.height, fill: "#000" })];
    if (this.photo) {
      const image = svg("image", { x: this.photo.x, y: this.photo.y, width: this.photo.width, height: this.photo.height,
        opacity: this.opacityRange.value, preserveAspectRatio: "none" });
      image.setAttribute("href", this.photo.url);
      parts.push(image);
    }
    this.people.forEach((points, p) => {
      const group = svg("g", { class: p === this.person ? "pose-person selected" : "pose-person", "data-person": p });
      LIMBS.forEach(([a, b], i) => {
        if (points[a][2] <= 0 || points[b][2] <= 0) return;
        group.append(svg("line", { x1: points[a][0], y1: points[a][1], x2: points[b][0], y2: points[b][1],
          stroke: rgb(COLOURS[i], 0.6), "stroke-width": 8 * scale, "stroke-linecap": "round", "data-person": p, class: "pose-limb" }));
      });
      points.forEach(([x, y, conf], j) => {
        if (conf <= 0) return;
        const selected = p === this.person && j === this.joint;
        group.append(svg("circle", { cx: x, cy: y, r: 5 * scale, fill: rgb(COLOURS[j]), class: selected ? "pose-joint selected" : "pose-joint",
          stroke: selected ? "#fff" : "none", "stroke-width": 2.5 * scale }));
        // A larger, invisible circle to grab the joint with a finger.
        group.append(svg("circle", { cx: x, cy: y, r: 13 * scale, fill: "transparent", "data-person": p, "data-joint": j,
          class: "pose-handle" }));
      });
      parts.push(group);
    });
    c.replaceChildren(...parts);
    this.describe();
  }

  describe() {
    const point = this.people[this.person]?.[this.joint];
    const who = this.people.length > 1 ? `Person ${this.person + 1}, ` : "";
    if (!point) this.where.textContent = "No person yet: add one or load a preset.";
    else if (point[2] <= 0) this.where.textContent = `${who}${JOINTS[this.joint].toLowerCase()}: hidden.`;
    else this.where.textContent = `${who}${JOINTS[this.joint].toLowerCase()}: x ${Math.round(point[0])}, y ${Math.round(point[1])}.`;
    this.canvas.setAttribute("aria-label", `Pose canvas, ${this.width} × ${this.height}, ${this.people.length} `
      + `${this.people.length === 1 ? "person" : "people"}. Selected: ${this.where.textContent}`);
  }

  // --- pointer and keys --------------------------------------------------------------------

  toCanvas(event) {
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(this.canvas.getScreenCTM().inverse());
    return [point.x, point.y];
  }

  bindPointer() {
    let drag = null; // {person, joint | null, last: [x, y]}
    this.canvas.addEventListener("pointerdown", (event) => {
      const target = event.target.closest("[data-person]");
      if (!target || event.button !== 0) return;
      event.preventDefault();
      this.canvas.focus({ preventScroll: true });
      const person = Number(target.dataset.person);
      const joint = target.dataset.joint === undefined ? null : Number(target.dataset.joint);
      this.canvas.setPointerCapture(event.pointerId); // the drawing is rebuilt while dragging
      drag = { person, joint, last: this.toCanvas(event) };
      this.select(person, joint ?? this.joint);
    });
    this.canvas.addEventListener("pointermove", (event) => {
      if (!drag) return;
      const [x, y] = this.toCanvas(event);
      const points = this.people[drag.person];
      if (drag.joint !== null) {
        points[drag.joint][0] = clamp(x, 0, this.width);
        points[drag.joint][1] = clamp(y, 0, this.height);
      } else {
        const [dx, dy] = [x - drag.last[0], y - drag.last[1]];
        this.people[drag.person] = moved(points, (px, py) => [px + dx, py + dy]);
      }
      drag.last = [x, y];
      this.render();
    });
    const end = () => {
      if (drag) this.changed();
      drag = null;
    };
    this.canvas.addEventListener("pointerup", end);
    this.canvas.addEventListener("pointercancel", end);
  }

  onKey(event) {
    const step = event.shiftKey ? 10 : 1;
    const move = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[event.key];
    const point = this.people[this.person]?.[this.joint];
    if (move && point && point[2] > 0) {
      point[0] = clamp(point[0] + move[0], 0, this.width);
      point[1] = clamp(point[1] + move[1], 0, this.height);
      this.changed();
    } else if (event.key === "[" || event.key === "]") {
      this.select(this.person, (this.joint + (event.key === "]" ? 1 : 17)) % 18);
    } else if (event.key === "h" || event.key === "H") {
      this.toggleJoint();
    } else {
      return;
    }
    event.preventDefault();
  }

  // --- photos and files --------------------------------------------------------------------

  /** Show a photo behind the skeleton, fitted to the canvas (null removes it). */
  setReference(file) {
    if (this.photo?.url) URL.revokeObjectURL(this.photo.url);
    this.photo = null;
    if (!file) return this.built && this.render();
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => {
      const { k, dx, dy } = fitting([img.naturalWidth, img.naturalHeight], [this.width, this.height]);
      this.photo = { url, x: dx, y: dy, width: img.naturalWidth * k, height: img.naturalHeight * k };
      this.render();
    };
    img.src = url;
  }

  async detectFrom(file) {
    this.say("Finding the pose in the photo…");
    try {
      const upload = await api.upload(file, file.name);
      const pose = await api.post("/api/poses/detect", { image: upload.ref });
      this.people = this.fitted(parsePose(pose));
      this.setReference(file);
      this.select(0, this.joint);
      this.say("The pose was found; drag the joints to adjust it.");
    } catch (error) {
      this.say(error.detail || error.message);
    }
  }

  saveJson() {
    const blob = new Blob([JSON.stringify(this.pose, null, 1)], { type: "application/json" });
    const link = h("a", { href: URL.createObjectURL(blob), download: "pose.json" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  async loadJson(file) {
    try {
      const parsed = parsePose(JSON.parse(await file.text()));
      this.width = parsed.width;
      this.height = parsed.height;
      this.people = parsed.people;
      this.select(0, this.joint);
      this.say(`Loaded ${file.name}.`);
    } catch (error) {
      this.say(error instanceof SyntaxError ? `${file.name} is not valid JSON.` : error.message);
    }
  }

  /** Render the pose into the ControlNet map on the server and hand it to whoever opened the editor. */
  async use() {
    if (!this.people.length) return this.say("Add a person first: the pose is empty.");
    this.useButton.disabled = true;
    this.say("Drawing the pose map…");
    try {
      const pose = this.pose;
      const map = await api.post("/api/poses/render", { pose });
      this.say("");
      this.dispatchEvent(new CustomEvent("use", { detail: { ...map, pose } }));
    } catch (error) {
      this.say(error.detail || error.message);
    } finally {
      this.useButton.disabled = false;
    }
  }

  say(text) {
    this.status.textContent = text || "";
  }
}

customElements.define("ld-pose-editor", PoseEditor);
