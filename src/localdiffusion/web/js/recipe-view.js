// A readable summary of a Recipe: the prompts, then the settings that shape the image.

import { h } from "./dom.js";
import { labelOf } from "./fields.js";

const MODE_NAMES = { txt2img: "Text to image", img2img: "Image to image", inpaint: "Inpaint", outpaint: "Outpaint" };

function rows(recipe) {
  const list = [
    ["model", recipe.model || "—"],
    ["mode", MODE_NAMES[recipe.mode] || recipe.mode, "Mode"],
    ["width", recipe.width && recipe.height ? `${recipe.width} × ${recipe.height}` : "model's native size", "Size"],
    ["steps", recipe.steps],
    ["sampler_name", recipe.sampler_name],
    ["scheduler", recipe.scheduler],
    ["cfg_scale", recipe.cfg_scale],
    ["seed", recipe.seed],
    ["batch_size", recipe.batch_size > 1 ? recipe.batch_size : null],
    ["clip_skip", recipe.clip_skip > 1 ? recipe.clip_skip : null],
  ];
  if (recipe.subseed_strength > 0) list.push(["subseed", `${recipe.subseed} at ${recipe.subseed_strength}`, "Variation"]);
  if (recipe.mode !== "txt2img" || recipe.enable_hr) list.push(["denoising_strength", recipe.denoising_strength]);
  if (recipe.mode === "inpaint" || recipe.mode === "outpaint") list.push(["mask_blur", recipe.mask_blur]);
  if (recipe.outpaint) {
    const o = recipe.outpaint;
    list.push(["outpaint", `left ${o.left}, right ${o.right}, up ${o.up}, down ${o.down}`]);
  }
  if (recipe.enable_hr) {
    list.push(["hr_scale", `${recipe.hr_scale}× with ${recipe.hr_upscaler}`, "Hires fix"]);
    if (recipe.hr_second_pass_steps) list.push(["hr_second_pass_steps", recipe.hr_second_pass_steps]);
  }
  (recipe.controls || []).forEach((unit, i) => list.push(["controls", controlSummary(unit), `ControlNet ${i + 1}`]));
  (recipe.references || []).forEach((ref, i) => list.push(["references", `at ${ref.scale}${ref.model ? ` with ${ref.model}` : ""}`, `Reference ${i + 1}`]));
  return list.filter(([, value]) => value !== null && value !== undefined && value !== "");
}

function controlSummary(unit) {
  const window = unit.guidance_start > 0 || unit.guidance_end < 1
    ? `, steps ${Math.round(unit.guidance_start * 100)}–${Math.round(unit.guidance_end * 100)} %` : "";
  return `${unit.module || "none"} → ${unit.model || "automatic"}, weight ${unit.weight}${window}`;
}

/** A <div> with the prompt, the negative prompt and a definition list of the other settings. */
export function recipeView(recipe) {
  const prompt = h("div", { class: "recipe-prompt" },
    h("h3", {}, labelOf("prompt", "Prompt")), h("p", {}, recipe.prompt || "(empty)"));
  const negative = recipe.negative_prompt
    ? h("div", { class: "recipe-prompt" }, h("h3", {}, labelOf("negative_prompt", "Negative prompt")), h("p", {}, recipe.negative_prompt))
    : null;
  const list = h("dl", { class: "recipe-list" },
    ...rows(recipe).flatMap(([name, value, label]) => [h("dt", {}, label || labelOf(name)), h("dd", {}, String(value))]));
  return h("div", { class: "recipe" }, prompt, negative, list);
}
