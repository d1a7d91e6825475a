// <ld-image-input>: pick or drop an image, upload it (POST /api/uploads) and keep its reference.
//
// Fires "image" with detail {ref, width, height, url} after each upload, and "error" with a sentence.
// show(image, label) makes an image that came from elsewhere (a rendered pose, a recipe's input)
// the current one without uploading it, so the zone never says "No image yet" beside a picture.

import { api } from "./api.js";
import { h } from "./dom.js";

class ImageInput extends HTMLElement {
  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.image = null;
    const inputId = `${this.id || "image"}-file`;
    this.file = h("input", { type: "file", id: inputId, accept: "image/*", class: "visually-hidden",
      onchange: () => this.file.files[0] && this.setFile(this.file.files[0]) });
    this.status = h("span", { class: "drop-status", "aria-live": "polite" }, "No image yet.");
    this.zone = h("div", { class: "drop-zone" },
      h("p", {}, "Drop an image here, or "),
      h("label", { for: inputId, class: "button" }, "Choose an image…"),
      this.file,
      this.status);
    this.append(this.zone);
    for (const type of ["dragenter", "dragover"]) {
      this.zone.addEventListener(type, (event) => {
        event.preventDefault();
        event.stopPropagation();
        this.zone.classList.add("dragging");
      });
    }
    this.zone.addEventListener("dragleave", () => this.zone.classList.remove("dragging"));
    this.zone.addEventListener("drop", (event) => {
      event.preventDefault();
      event.stopPropagation(); // the page-wide drop would read the PNG's settings instead
      this.zone.classList.remove("dragging");
      const file = [...(event.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/"));
      if (file) this.setFile(file);
      else this.fail("That is not an image file; drop a PNG, JPEG or WEBP image.");
    });
    if (this.shown) this.show(...this.shown);
  }

  /** Upload a File or Blob and make it the current image. */
  async setFile(blob, name = blob.name || "image.png") {
    this.status.textContent = "Uploading…";
    this.zone.classList.add("busy");
    try {
      const answer = await api.upload(blob, name);
      if (this.image?.url) URL.revokeObjectURL(this.image.url);
      this.image = { ...answer, url: URL.createObjectURL(blob), name };
      this.status.textContent = `${name}: ${answer.width} × ${answer.height}`;
      this.dispatchEvent(new CustomEvent("image", { detail: this.image }));
    } catch (error) {
      this.fail(error.detail || String(error));
    } finally {
      this.zone.classList.remove("busy");
      this.file.value = "";
    }
  }

  /** Make an already kept image ({ref, url, width?, height?}) the current one; `label` says where it came from. */
  show(image, label) {
    if (!this.built) {
      this.shown = [image, label]; // shown once the element is on the page
      return;
    }
    if (this.image?.url?.startsWith("blob:")) URL.revokeObjectURL(this.image.url);
    this.image = { ...image, name: label };
    const size = image.width && image.height ? `: ${image.width} × ${image.height}` : "";
    this.status.textContent = `${label}${size}`;
  }

  fail(message) {
    this.status.textContent = message;
    this.dispatchEvent(new CustomEvent("error", { detail: message }));
  }
}

customElements.define("ld-image-input", ImageInput);
