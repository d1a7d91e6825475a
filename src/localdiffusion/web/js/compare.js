// The Compare page: A1111's X/Y/Z plot on the Generate page's current settings.
//
// Each axis is a field (the choices come from /api/axes) and values in A1111's syntax. While the user
// types, the server reads the axes and counts the cells (/api/compare/check); "Compare" queues the job
// (POST /api/compare), whose grids, axis explanations and cells are shown when it is done. A cell's
// button loads that cell's settings into the Generate form. `#/compare/x=model&y=seed&y_values=1,2`
// opens the page with those axes chosen (the guide's Model card links so).

import { api, cached } from "./api.js";
import { emit, h } from "./dom.js";
import { clearFieldErrors, field, setOptions, showFieldError } from "./fields.js";
import { followJob } from "./explain-panel.js";
import { loadingText } from "./job-view.js";
import { recipeView } from "./recipe-view.js";

const AXES = [
  { name: "x", title: "X axis: columns" },
  { name: "y", title: "Y axis: rows" },
  { name: "z", title: "Z axis (optional): one grid per value" },
];
const LORA = "lora:NAME";
const CHECK_DELAY_MS = 300;
const PROMPT_PREVIEW = 120; // characters of the prompt shown above the form

export async function initCompare(section, { currentRecipe }) {
  const page = new ComparePage(section, currentRecipe, await cached("/api/axes"));
  page.build();
  return page;
}

class ComparePage {
  constructor(section, currentRecipe, listing) {
    this.section = section;
    this.currentRecipe = currentRecipe;
    this.listing = listing;
    this.fields = Object.fromEntries(listing.fields.map((f) => [f.field, f]));
    this.parts = {};
    this.checkTimer = 0;
    this.lastCheck = "";
  }

  build() {
    this.base = h("div", { class: "compare-base" });
    this.count = h("p", { class: "compare-count", "aria-live": "polite" });
    this.formError = h("p", { class: "form-error", role: "alert", hidden: true });
    this.button = h("button", { type: "submit", class: "primary big" }, "Compare");
    this.result = h("div", { class: "compare-result", "aria-live": "polite" });
    const form = h("form", { class: "compare-form" },
      this.formError,
      ...AXES.map((axis) => this.axisFieldset(axis)),
      h("p", { class: "hint" }, this.listing.syntax, ` At most ${this.listing.max_cells} cells in all.`),
      h("div", { class: "compare-submit" }, this.button, this.count));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
    this.form = form;
    this.section.append(
      h("p", { class: "hint compare-intro" }, "Make a grid of small variations of your current settings: choose what changes "
        + "across (X), down (Y) and, if you like, from one grid to the next (Z)."),
      this.base, form, this.result,
      h("datalist", { id: "compare-loras" }));
    for (const { name } of AXES) this.fieldChanged(name);
  }

  /** Called on every visit: the Generate page's settings may have changed, and LoRAs may have been added. */
  async show() {
    this.applyHash();
    this.showBase(await this.currentRecipe());
    try {
      const loras = await api.get("/api/models?kind=lora");
      document.getElementById("compare-loras").replaceChildren(...loras.map((m) => h("option", { value: m.name })));
    } catch {
      /* the LoRA name can still be typed */
    }
  }

  showBase(recipe) {
    const prompt = recipe.prompt?.trim() || "";
    const shown = prompt.length > PROMPT_PREVIEW ? `${prompt.slice(0, PROMPT_PREVIEW)}…` : prompt;
    const size = recipe.width && recipe.height ? `${recipe.width} × ${recipe.height}` : "the model's native size";
    this.base.replaceChildren(
      h("p", {}, "Runs on the Generate page's settings: ", prompt ? h("q", {}, shown) : h("em", {}, "an empty prompt"),
        ` with ${recipe.model || "the default model"}, ${size}${recipe.steps ? `, ${recipe.steps} steps` : ""}. `,
        h("a", { href: "#/generate" }, "Change them on the Generate page")),
      h("details", {}, h("summary", {}, "All the settings"), recipeView(recipe)));
  }

  /** Axes given after `#/compare/` as `x=FIELD` (and `x_values=...`, likewise y and z): each chosen axis gets
   *  its setting and the given values, else the setting's example (for Model: the installed checkpoints).
   *  Values the user typed stay when the axis already had that setting. */
  applyHash() {
    const hash = location.hash.replace(/^#\/?/, "");
    const slash = hash.indexOf("/");
    if (slash < 0) return;
    const params = new URLSearchParams(hash.slice(slash + 1));
    for (const { name } of AXES) {
      const chosen = params.get(name);
      if (chosen === null || !(chosen in this.fields || (name === "z" && chosen === ""))) continue;
      const { select, values } = this.parts[name];
      const given = params.get(`${name}_values`);
      if (given !== null) values.value = given;
      else if (select.value !== chosen || !values.value.trim()) values.value = this.fields[chosen]?.example || "";
      select.value = chosen;
      this.fieldChanged(name);
    }
  }

  axisFieldset({ name, title }) {
    const choices = this.listing.fields.map((f) => [f.field, f.label]);
    const select = h("select", { id: `compare-${name}-field`, onchange: () => this.fieldChanged(name) });
    setOptions(select, name === "z" ? [["", "None"], ...choices] : choices, false);
    select.value = { x: "cfg_scale", y: "seed", z: "" }[name];
    const oninput = () => this.scheduleCheck();
    const lora = h("input", { id: `compare-${name}-lora`, list: "compare-loras", autocomplete: "off", oninput });
    const values = h("input", { id: `compare-${name}-values`, autocomplete: "off", spellcheck: "false", oninput });
    const loraField = field(`${name}_lora`, lora, { label: "LoRA name", className: "compare-lora" });
    this.parts[name] = { select, lora, loraField, values };
    return h("fieldset", { class: "compare-axis" }, h("legend", {}, title),
      h("div", { class: "row" },
        field(`${name}_field`, select, { label: "Setting" }),
        loraField,
        field(name, values, { label: "Values", className: "compare-values" })));
  }

  fieldChanged(name) {
    const { select, loraField, values } = this.parts[name];
    const chosen = this.fields[select.value];
    loraField.hidden = select.value !== LORA;
    values.disabled = !chosen;
    values.placeholder = chosen ? `e.g. ${chosen.example}` : "";
    this.scheduleCheck();
  }

  /** The axis as `field=values` text, or null when it has no field or no values yet. */
  axisText(name) {
    const { select, lora, values } = this.parts[name];
    if (!select.value || !values.value.trim()) return null;
    const key = select.value === LORA ? `lora:${lora.value.trim()}` : select.value;
    return `${key}=${values.value}`;
  }

  axesBody() {
    return { x: this.axisText("x"), y: this.axisText("y"), z: this.axisText("z") };
  }

  /** A sentence for what the user has not filled in yet, naming the axis, or null when X and Y are ready. */
  missing() {
    for (const name of ["x", "y", "z"]) {
      const { select, lora, values } = this.parts[name];
      if (select.value === LORA && !lora.value.trim()) return [`${name}_lora`, "Choose or type the LoRA's name."];
      if (name !== "z" && !values.value.trim()) {
        return [name, `Give the ${name.toUpperCase()} axis its values, like ${this.fields[select.value].example}.`];
      }
    }
    return null;
  }

  scheduleCheck() {
    clearTimeout(this.checkTimer);
    this.checkTimer = setTimeout(() => this.check(), CHECK_DELAY_MS);
  }

  /** Ask the server how the axes read and how many cells they make; its refusal shows by the axis it names. */
  async check() {
    const body = this.axesBody();
    const asked = JSON.stringify(body);
    this.lastCheck = asked;
    this.clearErrors();
    const missing = this.missing();
    if (missing) {
      this.count.textContent = missing[1];
      return;
    }
    try {
      const answer = await api.post("/api/compare/check", body);
      if (this.lastCheck !== asked) return;
      const axes = Object.entries(answer.axes).map(([n, a]) => `${n.toUpperCase()}: ${a.label} ${a.labels.join(", ")}`);
      this.count.textContent = `${answer.cells} ${answer.cells === 1 ? "cell" : "cells"} (${axes.join("; ")})`;
    } catch (error) {
      if (this.lastCheck !== asked) return;
      this.count.textContent = "";
      this.showError(error);
    }
  }

  clearErrors() {
    clearFieldErrors(this.form);
    this.formError.hidden = true;
  }

  /** A refusal next to the axis it names, else above the form; returns the field element shown, if any. */
  showError(error) {
    const named = error.field && showFieldError(this.form, error.field, error.detail || String(error));
    if (named) return named;
    this.formError.textContent = error.detail || String(error);
    this.formError.hidden = false;
    return null;
  }

  async run() {
    clearTimeout(this.checkTimer);
    this.lastCheck = "";
    this.clearErrors();
    const missing = this.missing();
    if (missing) {
      this.showError({ field: missing[0], detail: missing[1] })?.querySelector("input, select")?.focus();
      return;
    }
    this.button.disabled = true;
    const status = h("p", { class: "explain-status", role: "status" }, "Queuing the comparison…");
    const bar = h("progress", { max: 1, value: 0, "aria-label": "Progress of the comparison" });
    const cancel = h("button", { type: "button", hidden: true }, "Cancel");
    this.result.dataset.state = "running";
    this.result.replaceChildren(h("div", { class: "explain-progress" }, bar, cancel), status);
    try {
      const job = await api.post("/api/compare", { recipe: await this.currentRecipe(), ...this.axesBody() });
      cancel.hidden = false;
      cancel.onclick = () => api.del(`/api/jobs/${job.id}`).catch((error) => { status.textContent = error.detail; });
      followJob(job.id, {
        onLoad: (load) => {
          bar.removeAttribute("value");
          status.textContent = loadingText(load);
        },
        onStep: ({ step, total, iteration, iterations }) => {
          if (!total) return;
          bar.max = total * (iterations || 1);
          bar.value = (iteration || 0) * total + Math.min(step, total);
          const cell = Math.min((iteration || 0) + 1, iterations || 1);
          status.textContent = `Cell ${cell} of ${iterations || 1}: step ${Math.min(step, total)} of ${total}`;
        },
        onEnd: (finished) => this.finish(finished),
      });
    } catch (error) {
      this.button.disabled = false;
      this.result.dataset.state = "failed";
      this.result.replaceChildren();
      this.showError(error)?.querySelector("input, select")?.focus();
    }
  }

  async finish(job) {
    this.button.disabled = false;
    if (job.status !== "done") {
      this.result.dataset.state = job.status;
      this.result.replaceChildren(h("p", { class: job.status === "cancelled" ? "explain-status" : "job-error" },
        job.status === "cancelled" ? "The comparison was cancelled." : job.error || "The comparison failed."));
      return;
    }
    try {
      this.render(job, await api.get(`/api/jobs/${job.id}/files/compare.json`));
      this.result.dataset.state = "done";
    } catch (error) {
      this.result.dataset.state = "failed";
      this.result.replaceChildren(h("p", { class: "job-error" }, error.detail || String(error)));
    }
  }

  render(job, summary) {
    const url = (name) => `/api/jobs/${job.id}/files/${name}`;
    const { x, y, z } = summary.axes;
    // With a Z axis, each grid image carries its Z value as a title; the alt text says it too.
    const grids = summary.grids.map((grid, iz) => {
      const where = z ? `${z.label} ${z.labels[iz]}: ` : "";
      return h("figure", { class: "compare-grid" },
        h("img", { src: url(grid.file), alt: `${where}${x.label} ${x.labels.join(", ")} across, ${y.label} ${y.labels.join(", ")} down` }),
        h("a", { href: url(grid.file), download: "" }, z ? `Download this grid (${z.label} ${z.labels[iz]})` : "Download the grid"),
        this.cellTable(summary, z ? iz : null, url));
    });
    this.result.replaceChildren(
      h("h2", {}, "What changed"),
      ...[x, y, z].filter(Boolean).map((axis) => h("p", { class: "explain-text" }, axis.explanation)),
      ...grids,
      h("p", {}, h("a", { href: url("compare.json"), target: "_blank" }, "compare.json"), " has every cell's full recipe."));
  }

  /** The cells of one grid as buttons under their axis labels; a button loads its cell into the Generate form. */
  cellTable(summary, iz, url) {
    const { x, y } = summary.axes;
    const cells = summary.cells.filter((cell) => cell.z === iz);
    const at = (ix, iy) => cells.find((cell) => cell.x === ix && cell.y === iy);
    return h("details", { class: "compare-cells" },
      h("summary", {}, "Use one cell's settings"),
      h("table", {},
        h("thead", {}, h("tr", {}, h("td", {}), ...x.labels.map((label) => h("th", { scope: "col" }, `${x.label} ${label}`)))),
        h("tbody", {}, ...y.labels.map((yLabel, iy) => h("tr", {},
          h("th", { scope: "row" }, `${y.label} ${yLabel}`),
          ...x.labels.map((xLabel, ix) => h("td", {}, h("button", {
            type: "button", class: "compare-cell", title: "Load these settings into the Generate page",
            "aria-label": `Use ${x.label} ${xLabel}, ${y.label} ${yLabel}`,
            onclick: () => emit("use-recipe", at(ix, iy).recipe),
          }, h("img", { src: url(at(ix, iy).file), alt: "", loading: "lazy" })))))))));
  }
}
