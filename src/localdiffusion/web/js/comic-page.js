// The page editor: one comic page as SVG in page millimetres. Click a panel to select it; drag the
// handles on its edges to move a gutter (Shift+drag slants it); drag inside it to pan its image and use the wheel to zoom;
// drag balloons, their corner (size) and their tail tip; double-click a balloon to edit its text in place.
// Drop a candidate thumbnail on a panel to put that image there.
//
// The editor changes balloons and image views in the project it was given and reports them with
// `onChange`; layout changes (gutters) go to `onLayout`, which the server applies.

import { h } from "./dom.js";
import { svg, balloonSvg, HAS_TAIL } from "./comic-balloons.js";
import { bbox, clamp, edgeMiddle, imagePlacement, innerBox, pointsAttr, readingOrder, round2, EDGES } from "./comic-geometry.js";

const EMPTY_PANEL = "#E6E6E6";
const MIN_BALLOON_MM = 8;
const DRAG_START_MM = 0.8;
const DOUBLE_TAP_MS = 450;
export const CANDIDATE_MIME = "application/x-localdiffusion-candidate";

export class PageEditor {
  /** `host`: {assetUrl(ref), onSelect({panel, balloon}), onChange(what), onLayout(op), onDropCandidate(panelId, data)} */
  constructor(host) {
    this.host = host;
    this.project = null;
    this.page = null;
    this.selection = { panel: null, balloon: null };
    this.drag = null;
    this.svg = svg("svg", { class: "comic-svg", role: "group", tabindex: "0",
      "aria-label": "Comic page: the arrow keys select panels, Enter edits the selected balloon's text" });
    this.el = h("div", { class: "comic-stage" }, this.svg);
    this.svg.addEventListener("pointerdown", (event) => this.onPointerDown(event));
    this.svg.addEventListener("pointermove", (event) => this.onPointerMove(event));
    this.svg.addEventListener("pointerup", (event) => this.onPointerUp(event));
    this.svg.addEventListener("pointercancel", () => this.cancelDrag());
    this.svg.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    this.svg.addEventListener("keydown", (event) => this.onKey(event));
    this.svg.addEventListener("dragover", (event) => this.onDragOver(event));
    this.svg.addEventListener("drop", (event) => this.onDrop(event));
    this.svg.addEventListener("dragleave", () => this.markDropTarget(null));
  }

  show(project, page, selection) {
    this.project = project;
    this.page = page;
    this.selection = { ...selection };
    this.render();
  }

  panel(id = this.selection.panel) {
    return this.page?.panels.find((p) => p.id === id) || null;
  }

  balloon(id = this.selection.balloon) {
    for (const panel of this.page?.panels || []) {
      const found = panel.balloons.find((b) => b.id === id);
      if (found) return { panel, balloon: found };
    }
    return null;
  }

  // --- drawing ---------------------------------------------------------------------------

  render() {
    const { width_mm: w, height_mm: hgt } = this.project.page_size;
    this.svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
    this.svg.style.aspectRatio = `${w} / ${hgt}`;
    const defs = svg("defs");
    const layers = [svg("rect", { x: 0, y: 0, width: w, height: hgt, fill: "#fff", class: "comic-paper" })];
    const order = readingOrder(this.page.panels, (p) => bbox(p.shape), this.project.direction);
    for (const panel of this.page.panels) layers.push(this.panelSvg(panel, defs));
    const borders = svg("g", { class: "comic-borders", "pointer-events": "none" });
    if (this.page.border.style !== "none" && this.page.border.width_mm > 0) {
      for (const panel of this.page.panels) {
        borders.append(svg("polygon", { points: pointsAttr(panel.shape), fill: "none", stroke: this.page.border.color,
          "stroke-width": this.page.border.width_mm, "stroke-linejoin": "round" }));
      }
    }
    layers.push(borders);
    const numbers = svg("g", { class: "comic-numbers", "pointer-events": "none" });
    order.forEach((panel, i) => {
      const box = innerBox(panel.shape);
      const label = svg("text", { x: box.x + 2.5, y: box.y + 6, class: "panel-number" });
      label.textContent = String(i + 1);
      numbers.append(label);
    });
    layers.push(numbers);
    for (const panel of this.page.panels) for (const balloon of panel.balloons) layers.push(this.balloonLayer(balloon));
    layers.push(this.handles());
    this.svg.replaceChildren(defs, ...layers);
  }

  panelSvg(panel, defs) {
    const selected = panel.id === this.selection.panel;
    const g = svg("g", { class: `comic-panel${selected ? " selected" : ""}`, "data-panel": panel.id });
    const chosen = panel.candidates.find((c) => c.id === panel.chosen && c.image);
    if (chosen) {
      const clipId = `clip-${panel.id}`;
      const clip = svg("clipPath", { id: clipId });
      clip.append(svg("polygon", { points: pointsAttr(panel.shape) }));
      defs.append(clip);
      const box = bbox(panel.shape);
      const place = imagePlacement(box, chosen.recipe.width, chosen.recipe.height, panel.view);
      g.append(svg("image", { href: this.host.assetUrl(chosen.image), x: place.x, y: place.y, width: place.w, height: place.h,
        preserveAspectRatio: "none", "clip-path": `url(#${clipId})`, "data-candidate": chosen.id }));
    }
    // The hit area: transparent over an image, the empty-panel grey otherwise.
    g.append(svg("polygon", { points: pointsAttr(panel.shape), class: "panel-hit", fill: chosen ? "transparent" : EMPTY_PANEL }));
    if (selected) g.append(svg("polygon", { points: pointsAttr(panel.shape), class: "panel-outline", "pointer-events": "none" }));
    return g;
  }

  balloonLayer(balloon) {
    const g = balloonSvg(balloon);
    if (balloon.id === this.selection.balloon) g.classList.add("selected");
    return g;
  }

  handles() {
    const g = svg("g", { class: "comic-handles" });
    const panel = this.panel();
    if (panel && panel.shape.length === 4) {
      for (const side of Object.keys(EDGES)) {
        const m = edgeMiddle(panel.shape, side);
        g.append(svg("circle", { cx: m.x, cy: m.y, r: 2.6, class: `handle gutter-handle side-${side}`, "data-gutter": side,
          "aria-label": `Move the ${side} edge` }));
      }
    }
    const found = this.balloon();
    if (found) {
      const { box, tail } = found.balloon;
      g.append(svg("rect", { x: box.x + box.w - 2, y: box.y + box.h - 2, width: 4, height: 4, class: "handle size-handle", "data-resize": found.balloon.id }));
      if (tail && HAS_TAIL.has(found.balloon.kind)) {
        g.append(svg("circle", { cx: tail.x, cy: tail.y, r: 2, class: "handle tail-handle", "data-tail": found.balloon.id }));
      }
    }
    return g;
  }

  // --- pointer ---------------------------------------------------------------------------

  toPage(event) {
    const matrix = this.svg.getScreenCTM();
    if (!matrix) return { x: 0, y: 0 };
    const p = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix.inverse());
    return { x: p.x, y: p.y };
  }

  onPointerDown(event) {
    if (event.button !== 0) return;
    const target = event.target;
    const at = this.toPage(event);
    const start = { at, moved: false };
    if (target.dataset.gutter) {
      // Shift+drag tilts the border about its middle instead of moving it.
      this.drag = { ...start, type: "gutter", slant: event.shiftKey, side: target.dataset.gutter, panel: this.selection.panel };
    } else if (target.dataset.resize) {
      const { balloon } = this.balloon(target.dataset.resize);
      this.drag = { ...start, type: "resize", balloon, box: { ...balloon.box } };
    } else if (target.dataset.tail) {
      const { balloon } = this.balloon(target.dataset.tail);
      this.drag = { ...start, type: "tail", balloon };
    } else if (target.closest("[data-balloon]")) {
      const id = target.closest("[data-balloon]").dataset.balloon;
      const found = this.balloon(id);
      this.select(found.panel.id, id);
      this.drag = { ...start, type: "balloon", balloon: found.balloon, box: { ...found.balloon.box } };
    } else if (target.closest("[data-panel]")) {
      const id = target.closest("[data-panel]").dataset.panel;
      const panel = this.panel(id);
      const wasSelected = id === this.selection.panel && !this.selection.balloon;
      this.select(id, null);
      const chosen = panel.candidates.find((c) => c.id === panel.chosen && c.image);
      if (wasSelected && chosen) this.drag = { ...start, type: "pan", panel, chosen, view: { ...panel.view } };
    } else {
      return;
    }
    if (this.drag) this.svg.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  onPointerMove(event) {
    const drag = this.drag;
    if (!drag) return;
    const at = this.toPage(event);
    const dx = at.x - drag.at.x;
    const dy = at.y - drag.at.y;
    if (!drag.moved && Math.hypot(dx, dy) < DRAG_START_MM) return;
    drag.moved = true;
    if (drag.type === "balloon") {
      drag.balloon.box = { ...drag.box, x: round2(drag.box.x + dx), y: round2(drag.box.y + dy) };
    } else if (drag.type === "resize") {
      drag.balloon.box = { ...drag.box, w: round2(Math.max(MIN_BALLOON_MM, drag.box.w + dx)), h: round2(Math.max(MIN_BALLOON_MM, drag.box.h + dy)) };
    } else if (drag.type === "tail") {
      drag.balloon.tail = { x: round2(at.x), y: round2(at.y) };
    } else if (drag.type === "pan") {
      const place = imagePlacement(bbox(drag.panel.shape), drag.chosen.recipe.width, drag.chosen.recipe.height, drag.view);
      const fraction = (v) => Math.round(clamp(v, 0, 1) * 1e4) / 1e4;
      drag.panel.view = { ...drag.view, x: fraction(drag.view.x - dx / place.w), y: fraction(drag.view.y - dy / place.h) };
    } else if (drag.type === "gutter") {
      drag.delta = drag.side === "left" || drag.side === "right" ? dx : dy;
    }
    this.render();
    if (drag.type === "gutter") this.ghostGutter(drag);
  }

  ghostGutter(drag) {
    const panel = this.panel(drag.panel);
    const [i, j] = EDGES[drag.side];
    const horizontal = drag.side === "left" || drag.side === "right";
    // As comic/layouts.py: a move shifts both ends; a slant moves them half the amount each way.
    const shift = (p, k) => (horizontal ? { x: p.x + drag.delta * k, y: p.y } : { x: p.x, y: p.y + drag.delta * k });
    const a = shift(panel.shape[i], drag.slant ? 0.5 : 1);
    const b = shift(panel.shape[j], drag.slant ? -0.5 : 1);
    this.svg.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "gutter-ghost" }));
  }

  onPointerUp(event) {
    const drag = this.drag;
    this.drag = null;
    if (!drag) return;
    this.svg.releasePointerCapture?.(event.pointerId);
    if (!drag.moved) {
      if (drag.type === "balloon") this.tapBalloon(drag.balloon.id, event.timeStamp);
      return;
    }
    if (drag.type === "gutter") {
      this.render();
      const amount = round2(drag.delta || 0);
      if (Math.abs(amount) < 0.5) return;
      if (drag.slant) this.host.onLayout({ op: "slant", panel: drag.panel, side: drag.side, amount_mm: amount });
      else this.host.onLayout({ op: "gutter", panel: drag.panel, side: drag.side, delta_mm: amount });
    } else {
      this.host.onChange(drag.type === "pan" ? "view" : "balloon");
    }
  }

  cancelDrag() {
    this.drag = null;
    this.render();
  }

  onWheel(event) {
    const hit = event.target.closest?.("[data-panel]");
    const panel = hit && this.panel(hit.dataset.panel);
    if (!panel || panel.id !== this.selection.panel || !panel.chosen) return;
    event.preventDefault();
    const zoom = clamp(panel.view.zoom * (event.deltaY < 0 ? 1.1 : 1 / 1.1), 1, 8);
    panel.view = { ...panel.view, zoom: round2(zoom) };
    this.render();
    this.host.onChange("view");
  }

  /** Keyboard: the arrows walk the panels in reading order, Enter edits the selected balloon's text,
   * Delete removes it. */
  onKey(event) {
    const order = readingOrder(this.page.panels, (p) => bbox(p.shape), this.project.direction);
    const index = order.findIndex((p) => p.id === this.selection.panel);
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (step && order.length) {
      event.preventDefault();
      this.select(order[(index + step + order.length) % order.length].id, null);
    } else if (event.key === "Enter" && this.selection.balloon) {
      event.preventDefault();
      this.editText(this.selection.balloon);
    } else if ((event.key === "Delete" || event.key === "Backspace") && this.selection.balloon) {
      event.preventDefault();
      const { panel } = this.balloon();
      panel.balloons = panel.balloons.filter((b) => b.id !== this.selection.balloon);
      this.select(panel.id, null);
      this.host.onChange("balloon");
    }
  }

  select(panel, balloon) {
    this.selection = { panel, balloon };
    this.render();
    this.host.onSelect({ panel, balloon });
  }

  // --- inline text -----------------------------------------------------------------------

  /** Two taps on a balloon in quick succession open its text. (The page is redrawn between the two
   * clicks, so the browser's own dblclick may not name the balloon.) */
  tapBalloon(id, time) {
    const last = this.lastTap;
    this.lastTap = { id, time };
    if (last && last.id === id && time - last.time < DOUBLE_TAP_MS) {
      this.lastTap = null;
      this.editText(id);
    }
  }

  /** A textarea laid over the balloon: what is typed shows in the balloon at once. */
  editText(balloonId) {
    const found = this.balloon(balloonId);
    if (!found) return;
    this.el.querySelector(".balloon-editor")?.remove();
    const node = this.svg.querySelector(`[data-balloon="${CSS.escape(balloonId)}"] .balloon-hit`);
    const stage = this.el.getBoundingClientRect();
    const rect = node.getBoundingClientRect();
    const editor = h("textarea", { class: "balloon-editor", "aria-label": "Balloon text", value: found.balloon.text,
      style: `left:${rect.left - stage.left}px;top:${rect.top - stage.top}px;width:${Math.max(rect.width, 120)}px;height:${Math.max(rect.height, 48)}px` });
    editor.value = found.balloon.text;
    editor.addEventListener("input", () => {
      found.balloon.text = editor.value;
      this.render();
      this.host.onChange("text");
    });
    const close = () => editor.remove();
    editor.addEventListener("blur", close);
    editor.addEventListener("keydown", (e) => {
      if (e.key === "Escape" || (e.key === "Enter" && (e.ctrlKey || e.metaKey))) editor.blur();
    });
    this.el.append(editor);
    editor.focus();
    editor.select();
  }

  // --- dropping candidates ---------------------------------------------------------------

  onDragOver(event) {
    if (!event.dataTransfer?.types.includes(CANDIDATE_MIME)) return;
    const hit = event.target.closest?.("[data-panel]");
    if (!hit) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    this.markDropTarget(hit.dataset.panel);
  }

  onDrop(event) {
    const hit = event.target.closest?.("[data-panel]");
    const data = event.dataTransfer?.getData(CANDIDATE_MIME);
    this.markDropTarget(null);
    if (!hit || !data) return;
    event.preventDefault();
    this.host.onDropCandidate(hit.dataset.panel, JSON.parse(data));
  }

  markDropTarget(panelId) {
    for (const g of this.svg.querySelectorAll(".comic-panel")) g.classList.toggle("drop-target", g.dataset.panel === panelId);
  }
}
