// The viewer's Upscale action: pick an upscaler and a scale, optionally repaint in tiles (SD upscale),
// follow the "upscale" job's progress, and show the result, which lands in the gallery.

import { api, cached } from "./api.js";
import { h, emit, uid } from "./dom.js";
import { followJob } from "./explain-panel.js";

export class UpscalePanel {
  /** `openImage(id)` shows a finished result in the viewer. */
  constructor(openImage) {
    this.openImage = openImage;
    this.imageId = null;
    this.unfollow = null;
    this.button = h("button", { type: "button", class: "upscale-button", "aria-expanded": "false", onclick: () => this.toggle() }, "Upscale…");
    const id = (name) => uid(`upscale-${name}`);
    const ids = { upscaler: id("upscaler"), scale: id("scale"), sd: id("sd"), denoise: id("denoise") };
    this.upscaler = h("select", { id: ids.upscaler, name: "upscaler" });
    this.scale = h("input", { type: "number", id: ids.scale, name: "scale", min: "1", max: "8", step: "0.5", value: "2" });
    this.sd = h("input", { type: "checkbox", id: ids.sd, name: "sd", onchange: () => this.sync() });
    this.denoise = h("input", { type: "number", id: ids.denoise, name: "denoise", min: "0", max: "1", step: "0.05", value: "0.3" });
    this.denoiseRow = h("div", { class: "row", hidden: true },
      h("label", { for: ids.denoise }, "Denoise (how much each tile may change)"), this.denoise);
    this.status = h("p", { class: "upscale-status", "aria-live": "polite" });
    this.progress = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Upscale progress" });
    this.start = h("button", { type: "submit", class: "primary" }, "Upscale");
    this.el = h("form", { class: "upscale", "aria-label": "Upscale this image", hidden: true, onsubmit: (event) => this.submit(event) },
      h("div", { class: "row" }, h("label", { for: ids.upscaler }, "Upscaler"), this.upscaler),
      h("div", { class: "row" }, h("label", { for: ids.scale }, "Scale"), this.scale),
      h("div", { class: "row check" }, this.sd, h("label", { for: ids.sd }, "SD upscale: repaint in tiles with the image's prompt")),
      this.denoiseRow, h("div", { class: "row" }, this.start), this.progress, this.status);
  }

  /** The viewer shows image `id` now: close the form and forget the last job. */
  reset(id) {
    this.imageId = id;
    this.unfollow?.();
    this.unfollow = null;
    this.el.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    this.progress.hidden = true;
    this.status.textContent = "";
    this.start.disabled = false;
  }

  async toggle() {
    this.el.hidden = !this.el.hidden;
    this.button.setAttribute("aria-expanded", String(!this.el.hidden));
    if (this.el.hidden || this.upscaler.options.length) return;
    try {
      const upscalers = await cached("/api/upscale/upscalers");
      this.upscaler.replaceChildren(...upscalers.filter((u) => u.name !== "None").map((u) =>
        h("option", { value: u.name }, u.model ? `${u.name} (model, ×${u.scale})` : u.name)));
    } catch (error) {
      this.status.textContent = error.detail || String(error);
    }
  }

  sync() {
    this.denoiseRow.hidden = !this.sd.checked;
  }

  async submit(event) {
    event.preventDefault();
    const imageId = this.imageId;
    const body = { image_id: imageId, upscaler: this.upscaler.value, scale: Number(this.scale.value), sd: this.sd.checked };
    if (this.sd.checked) body.denoise = Number(this.denoise.value);
    this.start.disabled = true;
    this.status.textContent = "Queued…";
    try {
      const job = await api.post("/api/upscale", body);
      this.follow(job.id, imageId);
    } catch (error) {
      this.status.textContent = error.detail || String(error);
      this.start.disabled = false;
    }
  }

  follow(jobId, imageId) {
    this.progress.hidden = false;
    this.progress.value = 0;
    this.unfollow = followJob(jobId, {
      onStep: ({ step = 0, total = 1, iteration = 0, iterations = 1, phase }) => {
        if (this.imageId !== imageId) return;
        this.progress.value = (iteration + step / Math.max(total, 1)) / Math.max(iterations, 1);
        this.status.textContent = phase === "sd-upscale" ? `Repainting tile ${iteration + 1} of ${iterations}…` : "Upscaling…";
      },
      onEnd: (job) => {
        emit("images-changed");
        if (this.imageId !== imageId) return;
        this.start.disabled = false;
        this.progress.hidden = true;
        if (job.status !== "done") {
          this.status.textContent = job.error || `The upscale was ${job.status}.`;
          return;
        }
        const resultId = job.result.images[0];
        this.status.replaceChildren(`Done: ${job.result.width} × ${job.result.height}, saved to the gallery. `,
          h("button", { type: "button", class: "link", onclick: () => this.openImage(resultId) }, "Show it"));
      },
    });
  }
}
