// <ld-mask-editor>: paint an inpainting mask over an image with a round brush.
//
// The mask lives in a canvas at the image's own size; toBlob() gives a PNG of the same size,
// white where the image should be repainted and black elsewhere.

import { h, uid } from "./dom.js";

const TINT = "#ff2d6f"; // how painted areas show on screen (the exported mask is white)

class MaskEditor extends HTMLElement {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.erasing = false;
    this.painted = false;
    const sizeId = uid("brush-size");
    this.brushSize = h("input", { type: "range", id: sizeId, min: "2", max: "256", step: "1", value: "32" });
    this.brushValue = h("output", { for: sizeId }, "32 px");
    this.brushSize.addEventListener("input", () => this.updateBrush());
    this.paintButton = h("button", { type: "button", "aria-pressed": "true", onclick: () => this.setErasing(false) }, "Brush");
    this.eraseButton = h("button", { type: "button", "aria-pressed": "false", onclick: () => this.setErasing(true) }, "Eraser");
    const tools = h("div", { class: "mask-tools", role: "toolbar", "aria-label": "Mask tools" },
      h("div", { class: "segmented", role: "group", "aria-label": "Paint or erase" }, this.paintButton, this.eraseButton),
      h("label", { for: sizeId }, "Brush size"), this.brushSize, this.brushValue,
      h("button", { type: "button", onclick: () => this.clear() }, "Clear"),
      h("button", { type: "button", onclick: () => this.invert() }, "Invert"));
    this.imageCanvas = h("canvas", { class: "mask-image", "aria-hidden": "true" });
    this.maskCanvas = h("canvas", {
      class: "mask-paint", tabindex: "0", role: "img",
      "aria-label": "Mask canvas: paint with the mouse, a pen or a finger where the image should change. Keys: [ and ] change the brush size, E toggles the eraser.",
    });
    this.cursor = h("div", { class: "mask-cursor", "aria-hidden": "true" });
    this.stage = h("div", { class: "mask-stage" }, this.imageCanvas, this.maskCanvas, this.cursor);
    this.hint = h("p", { class: "hint" }, "Paint over the parts you want to change; the rest of the image is kept.");
    this.append(tools, this.stage, this.hint);
    this.bindPointer();
    this.maskCanvas.addEventListener("keydown", (event) => this.onKey(event));
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
    img.onload = () => this.imageCanvas.getContext("2d").drawImage(img, 0, 0, width, height);
    img.src = url;
    this.clear();
  }

  get hasImage() {
    return this.maskCanvas.width > 0 && this.maskCanvas.height > 0 && this.imageCanvas.width > 0;
  }

  /** True when some pixel of the mask is painted. */
  hasMask() {
    if (!this.hasImage) return false;
    const { width, height } = this.maskCanvas;
    const data = this.maskCanvas.getContext("2d").getImageData(0, 0, width, height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
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

  clear() {
    this.maskCanvas.getContext("2d").clearRect(0, 0, this.maskCanvas.width, this.maskCanvas.height);
    this.changed();
  }

  invert() {
    const { width, height } = this.maskCanvas;
    const ctx = this.maskCanvas.getContext("2d");
    const copy = h("canvas", { width, height });
    copy.getContext("2d").drawImage(this.maskCanvas, 0, 0);
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = TINT;
    ctx.fillRect(0, 0, width, height);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(copy, 0, 0);
    ctx.globalCompositeOperation = "source-over";
    this.changed();
  }

  setErasing(erasing) {
    this.erasing = erasing;
    this.paintButton.setAttribute("aria-pressed", String(!erasing));
    this.eraseButton.setAttribute("aria-pressed", String(erasing));
    this.stage.classList.toggle("erasing", erasing);
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
    else if (event.key === "e" || event.key === "E") this.setErasing(!this.erasing);
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
    const ctx = this.maskCanvas.getContext("2d");
    ctx.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = TINT;
    ctx.fillStyle = TINT;
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

  moveCursor(event) {
    const rect = this.stage.getBoundingClientRect();
    const { scale } = this.toCanvas(event);
    const diameter = this.size * scale;
    Object.assign(this.cursor.style, {
      width: `${diameter}px`, height: `${diameter}px`,
      left: `${event.clientX - rect.left - diameter / 2}px`, top: `${event.clientY - rect.top - diameter / 2}px`,
    });
  }

  bindPointer() {
    let last = null;
    const canvas = this.maskCanvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (!this.hasImage || event.button !== 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      last = this.toCanvas(event);
      this.stroke(last, last);
    });
    canvas.addEventListener("pointermove", (event) => {
      this.moveCursor(event);
      if (!last) return;
      const point = this.toCanvas(event);
      this.stroke(last, point);
      last = point;
    });
    const end = () => {
      if (last) this.changed();
      last = null;
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("pointerenter", () => this.cursor.classList.add("shown"));
    canvas.addEventListener("pointerleave", () => this.cursor.classList.remove("shown"));
  }
}

customElements.define("ld-mask-editor", MaskEditor);
