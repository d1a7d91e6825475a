// A card per submitted job: queue position and the estimated wait (ETA), "Loading model…" with its own bar while a model that is not in
// memory yet loads, then a step/total bar with live previews, Cancel, then the results with each image's
// seed and the time the job took.
//
// Events come over the WebSocket ("loading" while models load, "step" per step); a slow poll of
// GET /api/jobs/{id} fills any gap (a missed event, a reconnect, the queue position moving).

import { api } from "./api.js";
import { h, emit, announce } from "./dom.js";
import { formatNumber, t } from "./i18n.js";
import { onJobEvent } from "./events.js";

const FINISHED = new Set(["done", "failed", "cancelled"]);
const POLL_MS = 1000;
const cards = new Map();

onJobEvent((event) => cards.get(event.job_id)?.onEvent(event));

export class JobCard {
  /** `job` is the answer of POST /api/jobs; `onDone(job)` runs once with the finished job. */
  constructor(job, { onDone, onOpen } = {}) {
    this.job = job;
    this.onDone = onDone;
    this.onOpen = onOpen;
    this.finished = false;
    this.previews = 0;
    // Shown, not read out at every step: announce() says when an image is done or the job fails.
    this.status = h("p", { class: "job-status" });
    this.announcedIteration = 0;
    this.bar = h("progress", { max: 1, value: 0, "aria-label": t("job.progress", { id: job.id }) });
    this.cancelButton = h("button", { type: "button", class: "cancel", onclick: () => this.cancel() }, t("job.cancel"));
    this.preview = h("img", { class: "preview", alt: t("job.previewAlt"), hidden: true });
    this.results = h("div", { class: "results" });
    this.error = h("p", { class: "job-error", hidden: true });
    const summary = (job.recipe?.prompt || "").trim() || t("job.noPrompt");
    this.el = h("article", { class: "job", dataset: { jobId: job.id, status: job.status, previews: "0" }, "aria-label": t("job.label", { id: job.id }) },
      h("header", {}, h("p", { class: "job-prompt", title: summary }, summary), this.cancelButton),
      this.status, this.bar, this.preview, this.results, this.error);
    cards.set(job.id, this);
    this.render(job);
    this.poll();
  }

  async poll() {
    while (!this.finished) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (this.finished) break;
      try {
        this.render(await api.get(`/api/jobs/${this.job.id}`));
      } catch (error) {
        if (error.status === 404) this.finish({ ...this.job, status: "failed", error: error.detail });
      }
    }
  }

  onEvent(event) {
    if (this.finished) return;
    const data = event.data || {};
    if (event.type === "loading") {
      this.setStatus("running");
      this.showProgress(data);
    } else if (event.type === "step") {
      this.setStatus("running");
      this.showProgress(data);
      if (event.preview) {
        this.previews += 1;
        this.el.dataset.previews = String(this.previews);
        this.preview.src = event.preview;
        this.preview.hidden = false;
      }
    } else if (event.type === "started") {
      this.setStatus("running");
      this.status.textContent = t("job.starting");
    } else if (FINISHED.has(event.type)) {
      // The event carries the result for "done"; fetch the job to be sure of the whole record.
      api.get(`/api/jobs/${this.job.id}`).then((job) => this.render(job),
        () => this.render({ ...this.job, status: event.type, error: data.error, result: data.result }));
    }
  }

  setStatus(status) {
    this.job = { ...this.job, status };
    this.el.dataset.status = status;
  }

  render(job) {
    if (this.finished) return;
    this.job = { ...this.job, ...job };
    this.el.dataset.status = job.status;
    if (job.status === "queued") {
      this.status.textContent = queuedText(job);
      this.el.dataset.position = String(job.position ?? 0);
    } else if (job.status === "running") {
      if (job.progress?.total || job.progress?.phase === "load") this.showProgress(job.progress);
      else this.status.textContent = t("job.starting");
    } else if (FINISHED.has(job.status)) {
      this.finish(job);
    }
  }

  showProgress({ step, total, iteration = 0, iterations = 1, phase, ...load }) {
    this.el.dataset.phase = phase || "";
    if (phase === "load") {
      this.showLoading(load);
      return;
    }
    if (!total) return;
    const done = Math.min(step, total);
    this.bar.max = total * iterations;
    this.bar.value = iteration * total + done;
    const batch = iterations > 1 ? t("job.batchOf", { n: iteration + 1, total: iterations }) : "";
    const hires = phase === "hires" ? t("job.hiresPass") : "";
    // No step has finished yet: the first one is under way (on a CPU one step can take many seconds).
    this.status.textContent = done === 0 ? t("job.firstStep", { total, batch, hires }) : t("job.step", { step: done, total, batch, hires });
    // A batch that moved on has finished the one before it: say so once, politely.
    if (iterations > 1 && iteration > this.announcedIteration) {
      this.announcedIteration = iteration;
      announce(t("job.imageDone", { n: iteration, total: iterations }));
    }
  }

  /** The load phase: models that are not in memory yet load before the first step (the first job of a model). */
  showLoading({ loading = "", loaded = 0, parts = 0 }) {
    if (parts > 1) {
      this.bar.max = parts;
      this.bar.value = loaded;
    } else {
      this.bar.removeAttribute("value"); // one model: diffusers reports no progress within it, so the bar just moves
    }
    this.status.textContent = loadingText({ loading, loaded, parts });
  }

  finish(job) {
    this.finished = true;
    cards.delete(this.job.id);
    this.job = job;
    this.el.dataset.status = job.status;
    this.cancelButton.hidden = true;
    this.bar.hidden = true;
    if (job.status === "done") {
      const ids = job.result?.images || [];
      const seeds = job.result?.seeds || [];
      const decoded = job.result?.decoder === "fast" ? t("job.decodedFast") : "";
      this.status.textContent = t("job.done", { count: ids.length, took: took(job.result?.timings), decoded });
      announce(this.status.textContent);
      this.preview.hidden = true;
      // Each image with its seed: the seed and the settings make that image again, or variations of it.
      this.results.replaceChildren(...ids.map((id, i) => h("figure", { class: "result-item" },
        h("button", {
          type: "button", class: "result", "aria-label": seeds[i] !== undefined ? t("job.openImageSeed", { id, seed: seeds[i] }) : t("job.openImage", { id }),
          onclick: () => this.onOpen?.(id, ids),
        }, h("img", { src: `/api/images/${id}/file`, alt: job.recipe?.prompt || t("job.noPrompt") })),
        seeds[i] !== undefined ? h("figcaption", { class: "result-seed" }, t("job.seed", { seed: seeds[i] })) : null)));
      if (job.usage) this.results.append(usageLine(job.usage));
      emit("images-changed");
    } else if (job.status === "cancelled") {
      this.status.textContent = t("job.cancelled");
      announce(this.status.textContent);
      this.preview.hidden = true;
    } else {
      this.status.textContent = t("job.failed");
      this.error.textContent = job.error || t("job.failedNoReason");
      announce(`${this.status.textContent} ${this.error.textContent}`, { assertive: true });
      this.error.hidden = false;
      this.preview.hidden = true;
    }
    this.onDone?.(job);
  }

  async cancel() {
    this.cancelButton.disabled = true;
    this.status.textContent = t("job.cancelling");
    try {
      await api.del(`/api/jobs/${this.job.id}`);
    } catch (error) {
      if (error.status !== 409) {
        this.error.textContent = error.detail;
        this.error.hidden = false;
        this.cancelButton.disabled = false;
      }
    }
  }
}

/** What a finished job used: where it ran, its GPU-seconds and an energy estimate (labelled as one). */
export function usageLine(usage) {
  const energy = usage.energy_wh < 1
    ? `${formatNumber(usage.energy_wh * 1000, { maximumFractionDigits: 0 })} mWh`
    : `${formatNumber(usage.energy_wh, { minimumFractionDigits: 2, maximumFractionDigits: 2 })} Wh`;
  return h("p", { class: "job-usage", title: usage.note }, t("job.usage", {
    device: usage.device || t("job.unknownDevice"),
    seconds: formatNumber(usage.gpu_seconds, { minimumFractionDigits: 1, maximumFractionDigits: 1 }), energy }));
}

/** ' in 3.2 s' (and how much of it loading the model, when that was a good part), from the job's timings. */
function took(timings) {
  const total = timings?.total;
  if (typeof total !== "number") return "";
  const digits = (value) => (value < 10 ? 1 : 0);
  const seconds = (value) => `${formatNumber(value, { maximumFractionDigits: digits(value), minimumFractionDigits: digits(value) })} s`;
  const load = timings.load || 0;
  const loading = load >= 1 && load >= total / 4 ? t("job.tookLoading", { load: seconds(load) }) : "";
  return t("job.took", { total: seconds(total), loading });
}

/** What a job's load phase is doing, in words (events and GET /api/jobs/{id} give loading, loaded, parts). */
export function loadingText({ loading = "", loaded = 0, parts = 0 } = {}) {
  const part = parts > 1 ? t("job.partOf", { n: Math.min(loaded + 1, parts), total: parts }) : "";
  if (loading) return t("job.loadingPart", { what: loading, part });
  if (parts && loaded >= parts) return t("job.loaded");
  return t("job.loading");
}

/** A queued job's place: how many jobs run before it (the fair order, GET /api/jobs/{id}'s `position`), about
 * how long until it starts (`eta_seconds`), or that the facilitator has paused the queue. */
export function queuedText({ position = 0, eta_seconds: eta = null, queue_paused: paused = false }) {
  const place = position > 0 ? t("job.ahead", { count: position }) : t("job.nextToRun");
  if (paused) return t("job.queuedPaused", { place });
  return t("job.queued", { place, eta: eta > 0 ? t("job.eta", { eta: duration(eta) }) : "" });
}

function duration(seconds) {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  const minutes = Math.round(seconds / 60);
  return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
