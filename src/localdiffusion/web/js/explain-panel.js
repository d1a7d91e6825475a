// "Why does it look like this?": an image's explanation, computed by an "explain" job on the server.
//
// The panel shows the denoising timeline (a slider over each step's predicted image), the CFG views
// with their caption, and the prompt's words as chips: hovering or focusing a chip lays that word's
// heatmap over the viewer's image. A finished explanation is shown at once; otherwise the job's
// progress is shown until it is done.

import { api } from "./api.js";
import { h, uid } from "./dom.js";
import { onJobEvent } from "./events.js";
import { loadingText } from "./job-view.js";

const FINISHED = new Set(["done", "failed", "cancelled"]);
const POLL_MS = 1000;

/** Follow job `id` until it finishes: `onLoad({loading, loaded, parts})` while its models load (the first
 *  job of a model), `onStep({step, total, iteration, iterations})` per step, then `onEnd(job)`.
 *  Events arrive over the socket; a slow poll covers any gap. Returns a function that stops following. */
export function followJob(id, { onLoad, onStep, onEnd }) {
  let over = false;
  const end = (job) => {
    if (over) return;
    over = true;
    stop();
    onEnd(job);
  };
  const stop = onJobEvent((event) => {
    if (event.job_id !== id || over) return;
    if (event.type === "loading") onLoad?.(event.data || {});
    else if (event.type === "step") onStep?.(event.data || {});
    else if (FINISHED.has(event.type)) api.get(`/api/jobs/${id}`).then(end, () => end({ id, status: event.type, error: event.data?.error }));
  });
  (async () => {
    while (!over) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (over) break;
      try {
        const job = await api.get(`/api/jobs/${id}`);
        if (FINISHED.has(job.status)) end(job);
        else if (job.progress?.phase === "load") onLoad?.(job.progress);
        else if (job.progress) onStep?.(job.progress);
      } catch (error) {
        if (error.status === 404) end({ id, status: "failed", error: error.detail });
      }
    }
  })();
  return () => {
    over = true;
    stop();
  };
}

export class ExplainPanel {
  /** `figure` holds the viewer's image; word heatmaps are laid over it. */
  constructor(figure) {
    this.figure = figure;
    this.imageId = null;
    this.jobId = null;
    this.unfollow = null;
    this.pinned = null;
    this.button = h("button", { type: "button", class: "explain-button", onclick: () => this.request() }, "Why does it look like this?");
    this.overlay = h("img", { class: "explain-overlay", alt: "", hidden: true });
    this.el = h("section", { class: "explain", "aria-label": "Why does it look like this?", hidden: true });
  }

  /** A new image is shown: forget the last one's explanation. */
  reset(imageId) {
    this.unfollow?.();
    this.unfollow = null;
    this.imageId = imageId;
    this.jobId = null;
    this.pinned = null;
    this.button.disabled = false;
    this.el.hidden = true;
    this.el.replaceChildren();
    this.overlay.hidden = true;
    this.figure.append(this.overlay);
  }

  async request() {
    const id = this.imageId;
    this.button.disabled = true;
    this.el.hidden = false;
    this.el.replaceChildren(h("p", { class: "explain-status", role: "status" }, "Asking for the explanation…"));
    try {
      const answer = await api.post(`/api/images/${id}/explain`, {});
      if (this.imageId !== id) return;
      if (answer.explanation) this.render(answer.explanation);
      else this.wait(answer.job);
    } catch (error) {
      if (this.imageId !== id) return;
      this.button.disabled = false;
      this.el.replaceChildren(h("p", { class: "job-error" }, error.detail || String(error)));
    }
  }

  wait(job) {
    const id = this.imageId;
    this.jobId = job.id;
    const status = h("p", { class: "explain-status", role: "status", "aria-live": "polite" },
      "Queued: the image is made again, watching every step.");
    const bar = h("progress", { max: 1, value: 0, "aria-label": "Progress of the explanation" });
    const cancel = h("button", { type: "button", class: "cancel", onclick: () => api.del(`/api/jobs/${job.id}`).catch(() => {}) }, "Cancel");
    this.el.dataset.state = "running";
    this.el.replaceChildren(status, h("div", { class: "explain-progress" }, bar, cancel));
    this.unfollow = followJob(job.id, {
      onLoad: (load) => {
        bar.removeAttribute("value");
        status.textContent = loadingText(load);
      },
      onStep: ({ step, total }) => {
        if (!total) return;
        bar.max = total;
        bar.value = Math.min(step, total);
        status.textContent = `Watching step ${Math.min(step, total)} of ${total}…`;
      },
      onEnd: async (finished) => {
        if (this.imageId !== id) return;
        if (finished.status === "done") {
          try {
            this.render(await api.get(`/api/images/${id}/explanation`));
          } catch (error) {
            this.el.replaceChildren(h("p", { class: "job-error" }, error.detail));
          }
        } else {
          this.button.disabled = false;
          this.el.dataset.state = finished.status;
          this.el.replaceChildren(h("p", { class: finished.status === "failed" ? "job-error" : "explain-status" },
            finished.status === "cancelled" ? "Cancelled." : finished.error || "The explanation failed."));
        }
      },
    });
  }

  url(name) {
    return this.explanation.urls[name] || this.explanation.files_base + name;
  }

  render(explanation) {
    this.explanation = explanation;
    this.button.disabled = false;
    this.el.hidden = false;
    this.el.dataset.state = "done";
    this.el.replaceChildren(
      h("h3", {}, "Why does it look like this?"),
      explanation.timeline ? this.timeline(explanation.timeline) : null,
      this.guidance(explanation.cfg || []),
      explanation.attention ? this.words(explanation.attention) : null);
  }

  // --- the denoising timeline ---

  timeline(timeline) {
    // Long runs show up to ten steps per pass (each a VAE decode); the label counts all the pass's steps.
    const frames = timeline.steps.filter((s) => s.frame);
    const stepsOf = (phase) => timeline.steps.filter((s) => s.phase === phase).length;
    if (!frames.length) return null;
    const image = h("img", { class: "explain-frame", alt: "" });
    const label = h("output", { class: "explain-step" });
    const slider = h("input", { type: "range", min: 1, max: frames.length, step: 1, value: frames.length, class: "explain-slider",
      "aria-label": "Step of the denoising timeline" });
    const showFrame = () => {
      const frame = frames[Number(slider.value) - 1];
      const hires = frame.phase === "hires" ? " (hires pass)" : "";
      image.src = this.url(frame.frame);
      image.alt = `The predicted final image at step ${frame.step}${hires}`;
      label.textContent = `Step ${frame.step} of ${stepsOf(frame.phase)}${hires}`;
      slider.setAttribute("aria-valuetext", label.textContent);
    };
    slider.addEventListener("input", showFrame);
    showFrame();
    for (const frame of frames) new Image().src = this.url(frame.frame); // scrubbing should not wait for the network
    return h("div", { class: "explain-block explain-timeline" },
      h("h4", {}, "From noise to picture"),
      h("p", { class: "hint" }, "Drag the slider to see what the model expected the final picture to be at each step."),
      image, h("div", { class: "explain-slider-row" }, slider, label),
      h("p", { class: "explain-text" }, timeline.explanation));
  }

  // --- classifier-free guidance ---

  guidance(views) {
    if (!views.length) {
      return h("div", { class: "explain-block" }, h("h4", {}, "Guidance (CFG)"),
        h("p", { class: "explain-text" }, "CFG was off for this image (a scale of 1 or less), so the prompt was followed without extra push."));
    }
    // Every view has the same caption (the CFG formula for this scale and negative prompt): shown once.
    return h("div", { class: "explain-block explain-cfg" },
      h("h4", {}, "Guidance (CFG)"),
      h("p", { class: "explain-text explain-caption" }, views[0].caption),
      h("p", { class: "explain-text" }, "From left: the prediction without your prompt (the negative prompt's, if any), "
        + "with it, the guided result, and where your words made a difference."),
      ...views.map((view) => h("figure", { class: "explain-cfg-view" },
        h("img", { src: this.url(view.file), alt: `Guidance at step ${view.step} of ${view.total}: without the prompt, with it, guided, and the difference` }),
        h("figcaption", {}, `Step ${view.step} of ${view.total}`))));
  }

  // --- word heatmaps ---

  words(attention) {
    // SD3.5 and FLUX: no word maps (joint attention); the server says why in one sentence.
    if (attention.unavailable) return h("p", { class: "explain-unavailable" }, attention.unavailable);
    const group = uid("explain-phase");
    let phase = "file";
    const chips = [];
    const chip = (entry, negative) => {
      const text = negative ? `not: ${entry.word}` : entry.word;
      const button = h("button", {
        type: "button", class: `word-chip${negative ? " negative" : ""}`, "aria-pressed": "false",
        dataset: { word: entry.word, negative: negative ? "true" : "false" },
        "aria-label": `${negative ? "Negative prompt word" : "Word"} '${entry.word}', ${entry.share}% of the attention: show where it acted`,
      }, text, h("span", { class: "share" }, `${Math.round(entry.share)}%`));
      const show = () => this.showHeat(entry, phase, negative);
      button.addEventListener("mouseenter", show);
      button.addEventListener("focus", show);
      button.addEventListener("mouseleave", () => this.showHeat(this.pinned?.entry, phase, this.pinned?.negative));
      button.addEventListener("blur", () => this.showHeat(this.pinned?.entry, phase, this.pinned?.negative));
      button.addEventListener("click", () => {
        const same = this.pinned?.entry === entry;
        for (const other of chips) other.setAttribute("aria-pressed", "false");
        this.pinned = same ? null : { entry, negative };
        button.setAttribute("aria-pressed", String(!same));
        this.showHeat(this.pinned ? entry : null, phase, negative);
      });
      chips.push(button);
      return button;
    };
    const hasPhases = [...attention.prompt, ...(attention.negative || [])].some((e) => e.early && e.late);
    const phases = hasPhases ? h("fieldset", { class: "explain-phases" }, h("legend", {}, "Steps"),
      ...[["file", "All"], ["early", "Early (composition)"], ["late", "Late (detail)"]].map(([value, text]) => {
        const id = uid("phase");
        const input = h("input", { type: "radio", name: group, id, value, checked: value === "file",
          onchange: () => {
            phase = value;
            if (this.pinned) this.showHeat(this.pinned.entry, phase, this.pinned.negative);
          } });
        return h("span", { class: "explain-phase" }, input, h("label", { for: id }, text));
      })) : null;
    return h("div", { class: "explain-block explain-words" },
      h("h4", {}, "Where each word acted"),
      h("p", { class: "hint" }, "Hover or focus a word to see its heatmap on the image; click to keep it shown."),
      h("div", { class: "word-chips", role: "group", "aria-label": "Prompt words" }, ...attention.prompt.map((e) => chip(e, false))),
      attention.negative?.length ? h("div", { class: "word-chips", role: "group", "aria-label": "Negative prompt words" },
        h("span", { class: "chips-label" }, "Negative prompt:"), ...attention.negative.map((e) => chip(e, true))) : null,
      phases,
      h("p", { class: "explain-text" }, attention.explanation));
  }

  showHeat(entry, phase = "file", negative = false) {
    if (!entry) {
      this.overlay.hidden = true;
      delete this.overlay.dataset.word;
      return;
    }
    const file = entry[phase] || entry.file;
    this.overlay.src = this.url(file);
    this.overlay.alt = `Where ${negative ? "the negative prompt word" : "the word"} '${entry.word}' acted on the image`;
    this.overlay.dataset.word = entry.word;
    this.overlay.hidden = false;
  }
}
