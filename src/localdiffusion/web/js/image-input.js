// <ld-image-input>: pick or drop an image, upload it (POST /api/uploads) and keep its reference.
//
// Fires "image" with detail {ref, width, height, url} after each upload, and "error" with a sentence.

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

  fail(message) {
    this.status.textContent = message;
    this.dispatchEvent(new CustomEvent("error", { detail: message }));
  }
}

customElements.define("ld-image-input", ImageInput);
