// Plane geometry for the comic page editor, in page millimetres (y down), mirroring comic/geometry.py
// and comic/render.py so that the editor shows panels and images where the export puts them.

export const EPS = 0.01;

export function bbox(points) {
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const x = Math.min(...xs);
  const y = Math.min(...ys);
  return { x, y, w: Math.max(Math.max(...xs) - x, EPS), h: Math.max(Math.max(...ys) - y, EPS) };
}

export const center = (box) => ({ x: box.x + box.w / 2, y: box.y + box.h / 2 });
export const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
export const round2 = (v) => Math.round(v * 100) / 100;

/** For a quad tl, tr, br, bl: the largest axis-aligned box inside it (slanted edges cut in). */
export function innerBox(shape) {
  if (shape.length !== 4) return bbox(shape);
  const [tl, tr, br, bl] = shape;
  const x0 = Math.max(tl.x, bl.x);
  const x1 = Math.min(tr.x, br.x);
  const y0 = Math.max(tl.y, tr.y);
  const y1 = Math.min(bl.y, br.y);
  return { x: x0, y: y0, w: Math.max(x1 - x0, EPS), h: Math.max(y1 - y0, EPS) };
}

export const pointsAttr = (shape) => shape.map((p) => `${p.x},${p.y}`).join(" ");

/**
 * Where an iw×ih image goes so that it shows in `box` as comic/render.py fit_image draws it: scaled to
 * cover (or fit inside) the box, zoomed, and panned so the view's focus point sits at the box centre
 * when it can. Returns the image's rectangle in page mm and the scale in mm per image pixel.
 */
export function imagePlacement(box, iw, ih, view) {
  const cover = Math.max(box.w / iw, box.h / ih);
  const scale = (view.fit === "contain" ? Math.min(box.w / iw, box.h / ih) : cover) * view.zoom;
  const cw = Math.min(box.w / scale, iw);
  const ch = Math.min(box.h / scale, ih);
  const left = clamp(view.x * iw - cw / 2, 0, iw - cw);
  const top = clamp(view.y * ih - ch / 2, 0, ih - ch);
  return {
    x: box.x + (box.w - cw * scale) / 2 - left * scale,
    y: box.y + (box.h - ch * scale) / 2 - top * scale,
    w: iw * scale,
    h: ih * scale,
    scale,
  };
}

/** Items in reading order (tiers from the top; ltr or rtl within a tier), as comic/geometry.py orders them. */
export function readingOrder(items, boxOf, direction) {
  return [...items].sort((a, b) => {
    const ba = boxOf(a);
    const bb = boxOf(b);
    const slack = Math.min(ba.h, bb.h) / 4;
    if (ba.y + ba.h <= bb.y + slack) return -1;
    if (bb.y + bb.h <= ba.y + slack) return 1;
    const dx = center(ba).x - center(bb).x;
    if (Math.abs(dx) > EPS) return (dx > 0 ? 1 : -1) * (direction === "rtl" ? -1 : 1);
    return center(ba).y - center(bb).y;
  });
}

// Which corners of a quad (tl, tr, br, bl) make each side.
export const EDGES = { left: [0, 3], right: [1, 2], top: [0, 1], bottom: [3, 2] };

export function edgeMiddle(shape, side) {
  const [i, j] = EDGES[side];
  return { x: (shape[i].x + shape[j].x) / 2, y: (shape[i].y + shape[j].y) / 2 };
}

/**
 * The panel across the gutter on one side of `panel`: the nearest one whose box overlaps this one's
 * span along that side. The server decides whether the two really share a whole edge.
 */
export function neighbour(panels, panel, side) {
  const own = bbox(panel.shape);
  const horizontal = side === "left" || side === "right";
  let best = null;
  let bestGap = Infinity;
  for (const other of panels) {
    if (other.id === panel.id) continue;
    const box = bbox(other.shape);
    const overlap = horizontal
      ? Math.min(own.y + own.h, box.y + box.h) - Math.max(own.y, box.y)
      : Math.min(own.x + own.w, box.x + box.w) - Math.max(own.x, box.x);
    if (overlap <= 1) continue;
    const gap = {
      right: box.x - (own.x + own.w), left: own.x - (box.x + box.w),
      bottom: box.y - (own.y + own.h), top: own.y - (box.y + box.h),
    }[side];
    if (gap > -1 && gap < bestGap) {
      best = other;
      bestGap = gap;
    }
  }
  return best;
}
