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
      h("div", { class: "guide-cards" }, ...cards));
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
