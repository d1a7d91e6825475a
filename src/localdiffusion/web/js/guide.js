// The parameter guide: a card per Recipe parameter (one plain sentence, an illustration, typical
// values, the longer explanation) with "Try it on my prompt", which queues a tiny comparison of three
// values on the Generate page's current settings and shows its grid. `#/guide/NAME` opens a card;
// every field's explanation bubble links to its card ("More…").

import { api, cached } from "./api.js";
import { h } from "./dom.js";
import { followJob } from "./explain-panel.js";
import { loadingText } from "./job-view.js";

export async function initGuide(section, { currentRecipe }) {
  const page = new GuidePage(section, currentRecipe, await cached("/api/parameters"));
  page.build();
  return page;
}

// The model families ("flavours") in plain language: size, speed, prompt style, licence, and the settings each needs.
const FLAVOURS = [
  { name: "SD 1.5", size: "about 1 billion parameters, a 2-4 GB file", speed: "the fastest: seconds on a GPU, about a minute on a CPU",
    prompts: "short lists of words and tags; weights like (word:1.2) and the negative prompt matter a lot",
    licence: "CreativeML OpenRAIL-M (free to use, with a list of forbidden uses)",
    settings: "512x512, 20-30 steps, CFG 7, any sampler (DPM++ 2M Karras is a good start); Clip skip 2 for anime models" },
  { name: "SDXL", size: "about 3.5 billion parameters, a 7 GB file", speed: "about 3-4 times slower than SD 1.5 for the same steps",
    prompts: "sentences or tags; understands composition better than SD 1.5",
    licence: "CreativeML OpenRAIL++-M (like SD 1.5's)",
    settings: "1024x1024 (or another size of about one megapixel), 25-40 steps, CFG 5-7; optionally the refiner from 0.8 of the steps" },
  { name: "SD 3.5", size: "Medium 2.5 and Large 8 billion parameters, plus three text encoders (T5 alone is 9 GB)",
    speed: "Medium is close to SDXL, Large is slower; Large Turbo needs only 4 steps",
    prompts: "full sentences: the T5 encoder reads the whole plain text (up to 256 tokens) and can spell short words; weights only act through the two CLIP encoders",
    licence: "Stability AI Community Licence (free for research, non-commercial use and businesses under 1 million dollars a year)",
    settings: "sampler Euler, schedule Simple, 28-40 steps, CFG 4-5 (Large Turbo: 4 steps, CFG 1); a single-file model needs clip_l, clip_g and t5xxl in models/text_encoder and its VAE in models/VAE" },
  { name: "FLUX.1", size: "12 billion parameters (24 GB in bf16, 12 GB with fp8 weights), plus CLIP-L and T5",
    speed: "the slowest per step; schnell needs only 4 steps, dev about 20-30",
    prompts: "plain descriptive sentences (up to 512 T5 tokens); follows long prompts and draws hands and text well; weights and negative prompts barely matter",
    licence: "schnell: Apache 2.0 (free, also commercially); dev: the FLUX.1 [dev] Non-Commercial Licence (read it before any commercial use)",
    settings: "sampler Euler, schedule Simple, CFG 1 and Distilled CFG Scale 3.5 (dev); sizes in multiples of 16; put ae.safetensors in models/VAE and clip_l and t5xxl in models/text_encoder; fp8_weights in settings.json for a 16 GB GPU" },
];

function flavoursSection() {
  const rows = [["size", "Size"], ["speed", "Speed"], ["prompts", "Prompt style"], ["licence", "Licence"], ["settings", "Settings"]];
  return h("section", { class: "guide-flavours", "aria-labelledby": "guide-flavours-title" },
    h("h2", { id: "guide-flavours-title" }, "Flavours"),
    h("p", { class: "hint" }, "Stable Diffusion comes in families that read prompts differently and need different settings. "
      + "The studio recognises each model's family from its file and picks these settings when a recipe leaves them out."),
    h("div", { class: "guide-cards" }, ...FLAVOURS.map((f) => h("article", { class: "guide-card" },
      h("h3", {}, f.name),
      h("dl", {}, ...rows.flatMap(([key, label]) => [h("dt", {}, label), h("dd", {}, f[key])]))))));
}

class GuidePage {
  constructor(section, currentRecipe, parameters) {
    this.section = section;
    this.currentRecipe = currentRecipe;
    this.parameters = parameters;
  }

  build() {
    const cards = Object.entries(this.parameters).filter(([, p]) => p.card).map(([name, p]) => this.card(name, p));
    this.section.append(
      h("p", { class: "hint guide-intro" }, "What each setting does, in one sentence, with typical values. "
        + "'Try it on my prompt' makes three small images of your current prompt with three values of the setting."),
      h("div", { class: "guide-cards" }, ...cards),
      flavoursSection());
  }

  /** Called on every visit: `#/guide/NAME` brings that card into view and focus. */
  show() {
    const name = location.hash.replace(/^#\/?/, "").split("/")[1];
    for (const el of this.section.querySelectorAll(".guide-card.highlight")) el.classList.remove("highlight");
    const card = name && this.section.querySelector(`#card-${CSS.escape(name)}`);
    if (!card) return;
    card.classList.add("highlight");
    card.scrollIntoView({ block: "start" });
    card.focus({ preventScroll: true });
  }

  card(name, p) {
    const card = p.card;
    const titleId = `card-${name}-title`;
    const result = h("div", { class: "guide-try", "aria-live": "polite" });
    const tryButton = card.try_values
      ? h("button", { type: "button", class: "primary", onclick: (event) => this.tryIt(name, event.currentTarget, result) },
        "Try it on my prompt")
      : null;
    return h("article", { class: "guide-card", id: `card-${name}`, tabindex: "-1", "aria-labelledby": titleId },
      h("h2", { id: titleId }, p.label),
      h("img", { class: "guide-illustration", src: `/api/parameters/${name}/illustration.svg`, alt: "", width: 160, height: 90 }),
      h("p", { class: "guide-sentence" }, card.sentence),
      h("p", {}, h("strong", {}, "Typical: "), card.typical),
      h("p", { class: "hint" }, p.help),
      tryButton || h("p", { class: "hint" }, `No quick comparison: ${card.why_not}`),
      card.compare ? h("p", {}, h("a", { class: "guide-compare", href: `#/compare/${card.compare}` },
        `Compare ${p.label.toLowerCase()}s on the Compare page`)) : null,
      result);
  }

  async tryIt(name, button, result) {
    button.disabled = true;
    const status = h("p", { class: "explain-status", role: "status" }, "Queuing three small images…");
    const bar = h("progress", { max: 1, value: 0, "aria-label": `Progress of the ${name} comparison` });
    result.dataset.state = "running";
    result.replaceChildren(status, bar);
    try {
      const recipe = await this.currentRecipe();
      const job = await api.post(`/api/parameters/${name}/try`, { recipe });
      followJob(job.id, {
        onLoad: (load) => {
          bar.removeAttribute("value");
          status.textContent = loadingText(load);
        },
        onStep: ({ step, total, iteration, iterations }) => {
          if (!total) return;
          bar.max = total * (iterations || 1);
          bar.value = (iteration || 0) * total + Math.min(step, total);
          status.textContent = `Image ${Math.min((iteration || 0) + 1, iterations || 1)} of ${iterations || 1}: step ${Math.min(step, total)} of ${total}`;
        },
        onEnd: (finished) => {
          button.disabled = false;
          result.dataset.state = finished.status;
          if (finished.status !== "done") {
            result.replaceChildren(h("p", { class: "job-error" }, finished.error || `The comparison was ${finished.status}.`));
            return;
          }
          const axis = finished.result.axes.x;
          result.replaceChildren(
            h("img", { class: "guide-grid", src: `/api/jobs/${finished.id}/files/${finished.result.grid}`,
              alt: `${axis.label} at ${axis.labels.join(", ")} on your prompt` }),
            h("p", { class: "explain-text" }, axis.explanation));
        },
      });
    } catch (error) {
      button.disabled = false;
      result.dataset.state = "failed";
      result.replaceChildren(h("p", { class: "job-error" }, error.detail || String(error)));
    }
  }
}

/** Add a "More…" link to every field explanation bubble, now and as fields are built. */
export async function installGuideLinks() {
  let parameters = {};
  try {
    parameters = await cached("/api/parameters");
  } catch {
    return; // no guide without the parameter table; the bubbles still work
  }
  const decorate = (root) => {
    for (const help of root.querySelectorAll?.(".field .help[id^='help-']") || []) {
      const name = help.id.slice("help-".length);
      if (help.querySelector(".more") || !parameters[name]?.card) continue;
      // Out of the Tab order until the bubble is opened with its button: a bubble shown by focus alone hides as
      // focus leaves the button, and a link inside it would take focus with it to the page body.
      help.append(" ", h("a", { class: "more", href: `#/guide/${name}`, tabindex: "-1" }, "More…"));
    }
  };
  decorate(document);
  new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) if (node.nodeType === 1) decorate(node.parentElement || node);
  }).observe(document.body, { childList: true, subtree: true });
}
