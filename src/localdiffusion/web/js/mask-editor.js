// <ld-mask-editor>: paint an inpainting mask over an image.
//
// Tools: brush, eraser, rectangle and lasso (hold Alt to take away), pick by colour; and whole-mask
// operations in three labelled groups: change the mask edge (grow, shrink, soften), select by colour
// (the tolerance of Pick colour) and select by brightness. Their fields have the "i" explanations of
// every other field (texts from /api/parameters). The mask lives in a canvas at the image's own size,
// as the alpha of a tint; toBlob() gives a PNG of the same size, white where the image should be
// repainted and black elsewhere (grey where softened).

import { h, needsLargerScreen, uid } from "./dom.js";
import { t } from "./i18n.js";
import { field } from "./fields.js";

const TINT = [255, 45, 111]; // how painted areas show on screen (the exported mask is white)
const TINT_CSS = `rgb(${TINT.join(",")})`;
const TOOLS = [["brush", "Brush"], ["eraser", "Eraser"], ["rect", "Rectangle"], ["lasso", "Lasso"], ["pick", "Pick colour"]];
const HINTS = {
  brush: "Paint over the parts you want to change; the rest of the image is kept.",
  eraser: "Erase painted parts of the mask.",
  rect: "Drag a rectangle to add it to the mask (hold Alt to take it away).",
  lasso: "Draw round an area to add it to the mask (hold Alt to take it away).",
  pick: "Click a colour in the image: every pixel within the tolerance is added to the mask.",
};

class MaskEditor extends HTMLElement {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.tool = "brush";
    const sizeId = uid("brush-size");
    this.brushSize = h("input", { type: "range", id: sizeId, min: "2", max: "256", step: "1", value: "32" });
    this.brushValue = h("output", { for: sizeId }, "32 px");
    this.brushSize.addEventListener("input", () => this.updateBrush());
    this.toolButtons = TOOLS.map(([tool, text]) =>
      h("button", { type: "button", "aria-pressed": String(tool === "brush"), dataset: { tool }, onclick: () => this.setTool(tool) }, text));
    this.amount = this.numberField("mask_edge", "By how many pixels", 8, 0, 128);
    this.tolerance = this.numberField("mask_tolerance", "How similar", 32, 0, 255);
    this.low = this.numberField("mask_brightness_from", "From (dark)", 200, 0, 255);
    this.high = this.numberField("mask_brightness_to", "To (light)", 255, 0, 255);
    const button = (text, onclick, label) => h("button", { type: "button", onclick, ...(label ? { "aria-label": label } : {}) }, text);
    const tools = h("div", { class: "mask-tools", role: "toolbar", "aria-label": "Mask tools" },
      h("div", { class: "segmented", role: "group", "aria-label": "Mask tool" }, ...this.toolButtons),
      h("label", { for: sizeId }, "Brush size"), this.brushSize, this.brushValue,
      button("Clear", () => this.clear()), button("Invert", () => this.invert()));
    const group = (legend, ...parts) => h("fieldset", { class: "mask-group" }, h("legend", {}, legend), ...parts);
    const edits = h("div", { class: "mask-groups" },
      group("Change the mask edge", this.amount.field, h("div", { class: "mask-actions" },
        button("Grow", () => this.grow(this.amountPx()), "Grow the mask"),
        button("Shrink", () => this.shrink(this.amountPx()), "Shrink the mask"),
        button("Soften", () => this.feather(this.amountPx()), "Soften the mask edge"))),
      group("Select by colour", this.tolerance.field, h("div", { class: "mask-actions" },
        button("Pick a colour", () => this.setTool("pick"), "Pick a colour: then click it in the image"))),
      group("Select by brightness", h("div", { class: "mask-range" }, this.low.field, this.high.field),
        h("div", { class: "mask-actions" },
          button("Select", () => this.selectBrightness(Number(this.low.input.value), Number(this.high.input.value)),
            "Select by brightness: add every pixel in this range to the mask"))));
    this.imageCanvas = h("canvas", { class: "mask-image", "aria-hidden": "true" });
    this.maskCanvas = h("canvas", {
      class: "mask-paint", tabindex: "0", role: "img",
      "aria-label": "Mask canvas: paint with the mouse, a pen or a finger where the image should change. Keys: [ and ] change the brush size, E toggles the eraser.",
    });
    this.cursor = h("div", { class: "mask-cursor", "aria-hidden": "true" });
    this.stage = h("div", { class: "mask-stage" }, this.imageCanvas, this.maskCanvas, this.cursor);
    this.hint = h("p", { class: "hint", "aria-live": "polite" }, HINTS.brush);
    this.append(needsLargerScreen(t("editor.maskNeedsRoom")), tools, edits, this.stage, this.hint);
    this.bindPointer();
    this.maskCanvas.addEventListener("keydown", (event) => this.onKey(event));
  }

  /** A small number field with its label and "i" explanation (`name` in /api/parameters; the fallbacks
   *  serve until the table has it). Tool settings never get a server error, so no error line. */
  numberField(name, label, value, min, max) {
    const input = h("input", { type: "number", min: String(min), max: String(max), step: "1", class: "mask-number" });
    input.value = String(value);
    const el = field(name, input, { label, className: "mask-setting" });
    // The mask's own error (#err-mask) sits after this editor: it must stay the first error line inside its field.
    el.querySelector(".field-error")?.remove();
    return { input, field: el };
  }

  amountPx() {
    return Math.max(0, Math.min(128, Math.round(Number(this.amount.input.value) || 0)));
  }

  /** Show `url` (width × height pixels) and start with an empty mask. */
  setImage(url, width, height) {
    for (const canvas of [this.imageCanvas, this.maskCanvas]) {
      canvas.width = width;
      canvas.height = height;
    }
    // Fit the stage's height limit while keeping the image's shape (the canvases stretch to the stage).
    this.stage.style.aspectRatio = `${width} / ${height}`;
    this.stage.style.width = `min(100%, ${(28 * width) / height}rem)`;
    const img = new Image();
    img.onload = () => this.imageCanvas.getContext("2d", { willReadFrequently: true }).drawImage(img, 0, 0, width, height);
    img.src = url;
    this.clear();
  }

  get hasImage() {
    return this.maskCanvas.width > 0 && this.maskCanvas.height > 0 && this.imageCanvas.width > 0;
  }

  get ctx() {
    return this.maskCanvas.getContext("2d", { willReadFrequently: true });
  }

  /** True when some pixel of the mask is painted. */
  hasMask() {
    if (!this.hasImage) return false;
    return this.alpha().some((a) => a > 0);
  }

  /** The mask as a PNG Blob: white = repaint, black = keep, at the image's size. */
  toBlob() {
    const { width, height } = this.maskCanvas;
    const out = h("canvas", { width, height });
    const ctx = out.getContext("2d");
    ctx.drawImage(this.maskCanvas, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, height);
    ctx.globalCompositeOperation = "destination-over";
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, width, height);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }

  // --- the mask as one alpha value per pixel ---

  alpha() {
    const { width, height } = this.maskCanvas;
    const data = this.ctx.getImageData(0, 0, width, height).data;
    const alpha = new Uint8ClampedArray(width * height);
    for (let i = 0; i < alpha.length; i++) alpha[i] = data[i * 4 + 3];
    return alpha;
  }

  setAlpha(alpha) {
    const { width, height } = this.maskCanvas;
    const image = new ImageData(width, height);
    for (let i = 0; i < alpha.length; i++) {
      image.data.set(TINT, i * 4);
      image.data[i * 4 + 3] = alpha[i];
    }
    this.ctx.putImageData(image, 0, 0);
    this.changed();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.maskCanvas.width, this.maskCanvas.height);
    this.changed();
  }

  invert() {
    this.setAlpha(this.alpha().map((a) => 255 - a));
  }

  /** Widen the mask by `px` pixels in every direction (a round brush). */
  grow(px) {
    if (!px) return;
    const alpha = this.alpha();
    const near = chamferDistance(alpha, this.maskCanvas.width, this.maskCanvas.height, (a) => a >= 128);
    this.setAlpha(alpha.map((a, i) => (near[i] <= px * 3 ? 255 : a)));
  }

  /** Narrow the mask by `px` pixels from every edge. */
  shrink(px) {
    if (!px) return;
    const alpha = this.alpha();
    const near = chamferDistance(alpha, this.maskCanvas.width, this.maskCanvas.height, (a) => a < 128);
    this.setAlpha(alpha.map((a, i) => (near[i] <= px * 3 ? 0 : a)));
  }

  /** Soften the mask's edge over about `px` pixels. */
  feather(px) {
    if (!px) return;
    const { width, height } = this.maskCanvas;
    const copy = h("canvas", { width, height });
    copy.getContext("2d").drawImage(this.maskCanvas, 0, 0);
    const ctx = this.ctx;
    ctx.clearRect(0, 0, width, height);
    ctx.filter = `blur(${px / 2}px)`;
    ctx.drawImage(copy, 0, 0);
    ctx.filter = "none";
    this.changed();
  }

  /** Add every pixel within the tolerance of the image's colour at (x, y) to the mask. */
  selectColour(x, y) {
    const pixels = this.imagePixels();
    const at = (Math.floor(y) * this.imageCanvas.width + Math.floor(x)) * 4;
    const target = [pixels[at], pixels[at + 1], pixels[at + 2]];
    const tolerance = Number(this.tolerance.input.value) || 0;
    this.addWhere((i) => Math.max(...[0, 1, 2].map((c) => Math.abs(pixels[i * 4 + c] - target[c]))) <= tolerance);
  }

  /** Add every pixel whose brightness (0-255) lies between `low` and `high` to the mask. */
  selectBrightness(low, high) {
    const pixels = this.imagePixels();
    this.addWhere((i) => {
      const luma = 0.299 * pixels[i * 4] + 0.587 * pixels[i * 4 + 1] + 0.114 * pixels[i * 4 + 2];
      return luma >= low && luma <= high;
    });
  }

  imagePixels() {
    const { width, height } = this.imageCanvas;
    return this.imageCanvas.getContext("2d", { willReadFrequently: true }).getImageData(0, 0, width, height).data;
  }

  addWhere(selected) {
    this.setAlpha(this.alpha().map((a, i) => (selected(i) ? 255 : a)));
  }

  // --- tools ---

  setTool(tool) {
    this.tool = tool;
    for (const button of this.toolButtons) button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
    this.stage.classList.toggle("erasing", tool === "eraser");
    this.stage.dataset.tool = tool;
    this.hint.textContent = HINTS[tool];
  }

  /** Brush size in image pixels. */
  get size() {
    return Number(this.brushSize.value);
  }

  updateBrush() {
    this.brushValue.textContent = `${this.size} px`;
  }

  changed() {
    this.dispatchEvent(new CustomEvent("maskchange"));
  }

  onKey(event) {
    const step = Math.max(2, Math.round(this.size * 0.15));
    if (event.key === "[") this.brushSize.value = String(this.size - step);
    else if (event.key === "]") this.brushSize.value = String(this.size + step);
    else if (event.key === "e" || event.key === "E") this.setTool(this.tool === "eraser" ? "brush" : "eraser");
    else return;
    event.preventDefault();
    this.updateBrush();
  }

  toCanvas(event) {
    const rect = this.maskCanvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.maskCanvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.maskCanvas.height) / rect.height,
      scale: rect.width / this.maskCanvas.width,
    };
  }

  stroke(from, to) {
    const ctx = this.ctx;
    ctx.globalCompositeOperation = this.tool === "eraser" ? "destination-out" : "source-over";
    ctx.strokeStyle = TINT_CSS;
    ctx.fillStyle = TINT_CSS;
    ctx.lineWidth = this.size;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    if (from.x === to.x && from.y === to.y) {
      ctx.arc(to.x, to.y, this.size / 2, 0, Math.PI * 2);
      ctx.fill();
    } else {
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }
    ctx.globalCompositeOperation = "source-over";
  }

  /** Draw a rectangle or lasso shape over the mask as it was when the drag began. */
  shape(drag, preview) {
    const ctx = this.ctx;
    ctx.putImageData(drag.before, 0, 0);
    ctx.beginPath();
    if (this.tool === "rect") {
      const [a, b] = [drag.points[0], drag.points[drag.points.length - 1]];
      ctx.rect(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(b.x - a.x), Math.abs(b.y - a.y));
    } else {
      drag.points.forEach((p, i) => (i ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
      ctx.closePath();
    }
    ctx.globalCompositeOperation = drag.subtract ? "destination-out" : "source-over";
    ctx.fillStyle = TINT_CSS;
    ctx.globalAlpha = preview ? 0.6 : 1;
    ctx.fill();
    ctx.globalAlpha = 1;
    ctx.globalCompositeOperation = "source-over";
  }

  moveCursor(event) {
    const rect = this.stage.getBoundingClientRect();
    const { scale } = this.toCanvas(event);
    const diameter = this.tool === "brush" || this.tool === "eraser" ? this.size * scale : 0;
    Object.assign(this.cursor.style, {
      width: `${diameter}px`, height: `${diameter}px`,
      left: `${event.clientX - rect.left - diameter / 2}px`, top: `${event.clientY - rect.top - diameter / 2}px`,
    });
  }

  bindPointer() {
    let drag = null;
    const canvas = this.maskCanvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (!this.hasImage || event.button !== 0) return;
      event.preventDefault();
      const point = this.toCanvas(event);
      if (this.tool === "pick") {
        this.selectColour(point.x, point.y);
        return;
      }
      canvas.setPointerCapture(event.pointerId);
      const { width, height } = canvas;
      // Alt when the drag starts makes a rectangle or lasso take away instead of add.
      drag = { points: [point], before: this.ctx.getImageData(0, 0, width, height), subtract: event.altKey };
      if (this.tool === "brush" || this.tool === "eraser") this.stroke(point, point);
    });
    canvas.addEventListener("pointermove", (event) => {
      this.moveCursor(event);
      if (!drag) return;
      const point = this.toCanvas(event);
      if (this.tool === "brush" || this.tool === "eraser") this.stroke(drag.points[drag.points.length - 1], point);
      drag.points.push(point);
      if (this.tool === "rect" || this.tool === "lasso") this.shape(drag, true);
    });
    const end = () => {
      if (!drag) return;
      if ((this.tool === "rect" || this.tool === "lasso") && drag.points.length > 1) this.shape(drag, false);
      drag = null;
      this.changed();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("pointerenter", () => this.cursor.classList.add("shown"));
    canvas.addEventListener("pointerleave", () => this.cursor.classList.remove("shown"));
  }
}

/** Distance (3 per pixel step, 4 per diagonal step: a chamfer, within about 8% of round) from each pixel
 * to the nearest pixel where `inside(alpha)` holds; two passes, whatever the distance. */
function chamferDistance(alpha, width, height, inside) {
  const far = 1e9;
  const d = new Float64Array(alpha.length);
  for (let i = 0; i < alpha.length; i++) d[i] = inside(alpha[i]) ? 0 : far;
  const relax = (i, j, cost) => {
    if (d[j] + cost < d[i]) d[i] = d[j] + cost;
  };
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (x > 0) relax(i, i - 1, 3);
      if (y > 0) {
        relax(i, i - width, 3);
        if (x > 0) relax(i, i - width - 1, 4);
        if (x < width - 1) relax(i, i - width + 1, 4);
      }
    }
  }
  for (let y = height - 1; y >= 0; y--) {
    for (let x = width - 1; x >= 0; x--) {
      const i = y * width + x;
      if (x < width - 1) relax(i, i + 1, 3);
      if (y < height - 1) {
        relax(i, i + width, 3);
        if (x < width - 1) relax(i, i + width + 1, 4);
        if (x > 0) relax(i, i + width - 1, 4);
      }
    }
  }
  return d;
}

customElements.define("ld-mask-editor", MaskEditor);
