// Lettering in the page editor: balloon outlines, tails and self-sizing text, ported from comic/lettering.py
// so that the preview is close to the export. The server's render stays the truth: text is measured here
// with the browser's copy of the lettering font, which may differ slightly from the one the server finds.

import { center } from "./comic-geometry.js";

const SVG_NS = "http://www.w3.org/2000/svg";
export const PT_MM = 25.4 / 72;
const MIN_PT = 5;
const MAX_PT = 12; // dialogue stops here so balloons on a page read alike
const MAX_SFX_PT = 48;
const LINE_SPACING = 1.15;
const MEASURE_PX = 200;
export const FONT_FAMILY = '"Comic Neue", "DejaVu Sans", sans-serif';
const FILLS = { "speech-oval": "#FFFFFF", "speech-rect": "#FFFFFF", thought: "#FFFFFF", caption: "#FFF3B0", sfx: "#FFD93D" };
const TEXT_AREA = { "speech-oval": 0.68, "speech-rect": 0.86, thought: 0.6, caption: 0.9, sfx: 0.96 };

export const KINDS = [
  ["speech-oval", "Speech (oval)"],
  ["speech-rect", "Speech (rounded)"],
  ["thought", "Thought"],
  ["caption", "Caption"],
  ["sfx", "Sound effect"],
];
export const HAS_TAIL = new Set(["speech-oval", "speech-rect", "thought"]);

export function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  return el;
}

let measureContext = null;
const fontString = (bold) => `${bold ? "700" : "400"} ${MEASURE_PX}px ${FONT_FAMILY}`;

function measurer(bold) {
  measureContext ||= document.createElement("canvas").getContext("2d");
  measureContext.font = fontString(bold);
  return measureContext;
}

function textWidthMm(text, sizeMm, bold) {
  return (measurer(bold).measureText(text).width / MEASURE_PX) * sizeMm;
}

function ascentDescent(sizeMm, bold) {
  const m = measurer(bold).measureText("Hg");
  const ascent = m.fontBoundingBoxAscent ?? MEASURE_PX * 0.8;
  const descent = m.fontBoundingBoxDescent ?? MEASURE_PX * 0.2;
  return [(ascent / MEASURE_PX) * sizeMm, (descent / MEASURE_PX) * sizeMm];
}

/** Greedy word wrap that keeps explicit newlines; a word wider than the line gets a line of its own. */
function wrap(text, widthMm, sizeMm, bold) {
  const lines = [];
  for (const paragraph of text.split("\n")) {
    let line = "";
    for (const word of paragraph.split(/\s+/).filter(Boolean)) {
      const trial = line ? `${line} ${word}` : word;
      if (line && textWidthMm(trial, sizeMm, bold) > widthMm) {
        lines.push(line);
        line = word;
      } else {
        line = trial;
      }
    }
    lines.push(line);
  }
  return lines;
}

function fits(lines, w, h, sizeMm, bold) {
  const widest = Math.max(0, ...lines.map((line) => textWidthMm(line, sizeMm, bold)));
  return widest <= w && lines.length * sizeMm * LINE_SPACING <= h;
}

/** The largest size (points, half-point steps) at which the wrapped text fits, and its lines. */
export function fitText(text, w, h, bold = false, sizePt = null, maxPt = MAX_PT) {
  if (sizePt) return [sizePt, wrap(text, w, sizePt * PT_MM, bold)];
  for (let size = maxPt; size > MIN_PT; size -= 0.5) {
    const lines = wrap(text, w, size * PT_MM, bold);
    if (fits(lines, w, h, size * PT_MM, bold)) return [size, lines];
  }
  return [MIN_PT, wrap(text, w, MIN_PT * PT_MM, bold)];
}

function placeLines(lines, middle, sizePt, bold) {
  const size = sizePt * PT_MM;
  const [ascent, descent] = ascentDescent(size, bold);
  const step = size * LINE_SPACING;
  const top = middle.y - (lines.length * step) / 2;
  return lines.map((text, i) => ({ text, x: middle.x, y: top + i * step + (step - ascent - descent) / 2 + ascent }));
}

function ellipse(box, segments = 72) {
  const c = center(box);
  return Array.from({ length: segments }, (_, i) => ({
    x: c.x + (box.w / 2) * Math.cos((2 * Math.PI * i) / segments),
    y: c.y + (box.h / 2) * Math.sin((2 * Math.PI * i) / segments),
  }));
}

const circle = (cx, cy, r) => ellipse({ x: cx - r, y: cy - r, w: 2 * r, h: 2 * r }, 24);

function roundedRect(box, radius, segments = 8) {
  const r = Math.min(radius, box.w / 2, box.h / 2);
  const corners = [[box.x + box.w - r, box.y + r, -90], [box.x + box.w - r, box.y + box.h - r, 0],
    [box.x + r, box.y + box.h - r, 90], [box.x + r, box.y + r, 180]];
  const points = [];
  for (const [cx, cy, start] of corners) {
    for (let i = 0; i <= segments; i += 1) {
      const a = ((start + (90 * i) / segments) * Math.PI) / 180;
      points.push({ x: cx + r * Math.cos(a), y: cy + r * Math.sin(a) });
    }
  }
  return points;
}

function rectangle(box) {
  return [{ x: box.x, y: box.y }, { x: box.x + box.w, y: box.y }, { x: box.x + box.w, y: box.y + box.h }, { x: box.x, y: box.y + box.h }];
}

function tail(box, target) {
  const c = center(box);
  const dx = target.x - c.x;
  const dy = target.y - c.y;
  const length = Math.hypot(dx, dy) || 1;
  const half = Math.min(box.w, box.h) * 0.14;
  const nx = (-dy / length) * half;
  const ny = (dx / length) * half;
  return [{ x: c.x + nx, y: c.y + ny }, { x: target.x, y: target.y }, { x: c.x - nx, y: c.y - ny }];
}

function cloud(box) {
  const r = Math.min(box.w, box.h) * 0.16;
  const inner = { x: box.x + r, y: box.y + r, w: Math.max(box.w - 2 * r, 1), h: Math.max(box.h - 2 * r, 1) };
  const c = center(inner);
  const bumps = Math.max(8, Math.floor((Math.PI * (inner.w + inner.h)) / (2.2 * r)));
  const shapes = [ellipse(inner)];
  for (let i = 0; i < bumps; i += 1) {
    const a = (2 * Math.PI * i) / bumps;
    shapes.push(circle(c.x + (inner.w / 2) * Math.cos(a), c.y + (inner.h / 2) * Math.sin(a), r));
  }
  return shapes;
}

function thoughtTail(box, target) {
  const c = center(box);
  const edge = { x: c.x + (target.x - c.x) * 0.55, y: c.y + (target.y - c.y) * 0.55 };
  const r = Math.min(box.w, box.h) * 0.09;
  return [0.15, 0.5, 0.85].map((t, i) => circle(edge.x + (target.x - edge.x) * t, edge.y + (target.y - edge.y) * t, r * (1 - 0.3 * i)));
}

/** A balloon as outline polygons and centred text lines, in page mm (comic/lettering.py `letter`). */
export function letter(balloon) {
  const { box, kind } = balloon;
  const share = TEXT_AREA[kind];
  const bold = kind === "sfx";
  const [sizePt, lines] = fitText(balloon.text || "", box.w * share, box.h * share, bold, balloon.font_size,
    kind === "sfx" ? MAX_SFX_PT : MAX_PT);
  const placed = placeLines(lines, center(box), sizePt, bold);
  const base = { fill: FILLS[kind], stroke: balloon.outline, lines: placed, sizePt, bold, sfx: kind === "sfx",
    rotation: balloon.rotation || 0, center: center(box) };
  if (kind === "sfx") return { ...base, shapes: [] };
  let shapes;
  if (kind === "speech-oval") shapes = [ellipse(box)];
  else if (kind === "speech-rect") shapes = [roundedRect(box, Math.min(box.w, box.h) * 0.25)];
  else if (kind === "thought") shapes = cloud(box);
  else shapes = [rectangle(box)];
  if (balloon.tail && (kind === "speech-oval" || kind === "speech-rect")) shapes.unshift(tail(box, balloon.tail));
  if (balloon.tail && kind === "thought") shapes.push(...thoughtTail(box, balloon.tail));
  return { ...base, shapes };
}

const points = (shape) => shape.map((p) => `${p.x.toFixed(2)},${p.y.toFixed(2)}`).join(" ");

/** The balloon drawn as SVG: every part stroked twice as wide, then every part filled, so only the union's outline shows. */
export function balloonSvg(balloon) {
  const lettered = letter(balloon);
  const g = svg("g", { class: `balloon balloon-${balloon.kind}`, "data-balloon": balloon.id });
  for (const shape of lettered.shapes) {
    g.append(svg("polygon", { points: points(shape), fill: "none", stroke: "#000", "stroke-width": 2 * lettered.stroke, "stroke-linejoin": "round" }));
  }
  for (const shape of lettered.shapes) g.append(svg("polygon", { points: points(shape), fill: lettered.fill }));
  const text = svg("text", {
    "font-family": FONT_FAMILY, "font-size": (lettered.sizePt * PT_MM).toFixed(3), "font-weight": lettered.bold ? 700 : 400,
    "text-anchor": "middle", fill: lettered.sfx ? lettered.fill : "#000",
    stroke: lettered.sfx ? "#000" : null, "stroke-width": lettered.sfx ? lettered.stroke : null,
    "paint-order": lettered.sfx ? "stroke" : null,
    transform: lettered.sfx && lettered.rotation ? `rotate(${-lettered.rotation} ${lettered.center.x} ${lettered.center.y})` : null,
  });
  for (const line of lettered.lines) {
    const span = svg("tspan", { x: line.x.toFixed(2), y: line.y.toFixed(2) });
    span.textContent = line.text;
    text.append(span);
  }
  g.append(text);
  // An invisible box over the whole balloon takes the pointer, so a drag anywhere on it moves it.
  const hit = svg("rect", { x: balloon.box.x, y: balloon.box.y, width: balloon.box.w, height: balloon.box.h, class: "balloon-hit" });
  g.append(hit);
  return g;
}

/** A new balloon of `kind` in the panel's inner box, below the `index` balloons already there, its tail
 * (if any) toward the middle; a caption starts at the corner where reading starts. */
export function newBalloon(kind, inner, id, { index = 0, rtl = false } = {}) {
  const sfx = kind === "sfx";
  const caption = kind === "caption";
  const w = Math.min(inner.w * (sfx ? 0.5 : 0.55), 70);
  const h = Math.min(inner.h * (caption ? 0.16 : 0.28), caption ? 18 : 34);
  const x = caption ? (rtl ? inner.x + inner.w - w - 2 : inner.x + 2) : inner.x + (inner.w - w) / 2;
  const y = Math.min(inner.y + (sfx ? inner.h * 0.4 : 3) + index * (h + 2), inner.y + inner.h - h - 2);
  const box = { x, y, w, h };
  const tailPoint = HAS_TAIL.has(kind) ? { x: x + w * 0.35, y: Math.min(y + h + inner.h * 0.3, inner.y + inner.h - 2) } : null;
  return {
    id, kind, text: sfx ? "BOOM" : caption ? "Meanwhile…" : "", box, tail: tailPoint, speaker: null,
    rotation: sfx ? 12 : 0, outline: 0.6, font_size: null,
  };
}
