// The Train page: a dataset from gallery images and uploads (captions, trigger word, source), the settings with
// their "i" help (GET /api/train/settings), how long it would take here (POST /api/train/estimate), start
// (POST /api/train), progress (loss curve, step, ETA, samples with and without the trigger word), cancel, and when
// done "Use in Generate" and "What did training change" (a comparison of LoRA weights through POST /api/compare).
import { api } from "./api.js";
import { h } from "./dom.js";

const OVERFIT = "Overfitting: when the loss keeps falling and the samples start to copy your pictures, the model has " +
  "learned them too well. Then your character appears even when you don't ask for it (look at the row without the " +
  "trigger word), and other prompts stop working. Use a lower LoRA weight (0.5-0.75), or train fewer steps.";

export function initTrain(section, { useInGenerate } = {}) {
  const message = h("p", { role: "status", "aria-live": "polite" });
  const name = h("input", { id: "train-name", value: "my character" });
  const trigger = h("input", { id: "train-trigger", value: "mira_character" });
  const source = h("input", { id: "train-source", placeholder: "my own drawings" });
  const files = h("input", { id: "train-files", type: "file", accept: "image/*", multiple: true });
  const gallery = h("div", { class: "train-gallery", role: "group", "aria-label": "Gallery images" });
  const captions = h("div", { class: "train-captions" });
  const settingsBox = h("div", { class: "train-settings" });
  const more = h("details", {}, h("summary", {}, "More settings"));
  const estimate = h("p", { class: "muted", id: "train-estimate" });
  const progress = h("div", { class: "train-progress", hidden: true });
  const status = h("p", { id: "train-status", "aria-live": "polite" });
  const curve = h("div", { id: "train-loss" });
  const samples = h("div", { id: "train-samples", class: "train-samples" });
  const done = h("div", { id: "train-done", hidden: true });
  const cancel = h("button", { type: "button", onclick: () => stop() }, "Cancel training");
  let dataset = null, job = null, timer = null, picked = [], uploads = [];

  section.append(h("h1", {}, "Train your own"), message,
    h("h2", {}, "1. Your pictures"),
    h("div", { class: "field" }, h("label", { for: "train-name" }, "Dataset name"), name),
    h("div", { class: "field" }, h("label", { for: "train-trigger" }, "Trigger word"), trigger),
    h("div", { class: "field" }, h("label", { for: "train-source" }, "Where the pictures come from and whose they are"), source),
    h("div", { class: "field" }, h("label", { for: "train-files" }, "Upload pictures"), files),
    h("p", {}, "Or pick pictures from your gallery:"), gallery, captions,
    h("button", { type: "button", id: "train-make", onclick: () => makeDataset() }, "Make the dataset"),
    h("h2", {}, "2. Settings"), settingsBox, more, estimate,
    h("button", { type: "button", id: "train-start", class: "primary", onclick: () => start() }, "Start training"),
    progress);
  progress.append(status, curve, samples, cancel, done);

  files.addEventListener("change", async () => {
    for (const file of files.files) {
      uploads.push({ ref: (await api.upload(file, file.name)).ref, label: file.name });
    }
    renderCaptions();
  });

  function renderCaptions() {
    const items = [...picked.map((id) => ({ image_id: id, label: `gallery image ${id}` })), ...uploads];
    captions.replaceChildren(...items.map((item, i) => h("div", { class: "field" },
      h("label", { for: `train-caption-${i}` }, `Caption of ${item.label}`),
      h("input", { id: `train-caption-${i}`, "data-index": i, value: item.caption || "" }))));
    return items;
  }

  async function showGallery() {
    const images = await api.get("/api/images?limit=24").catch(() => []);
    const list = Array.isArray(images) ? images : images.items || [];
    gallery.replaceChildren(...list.map((img) => h("label", { class: "check" },
      h("input", { type: "checkbox", value: img.id, "aria-label": `Use gallery image ${img.id}`, onchange: (e) => {
        picked = e.target.checked ? [...picked, img.id] : picked.filter((x) => x !== img.id);
        renderCaptions();
      } }), h("img", { src: `/api/images/${img.id}/thumb`, alt: img.prompt || `image ${img.id}`, width: 64, height: 64 }))));
  }

  const fieldInputs = {};
  async function showSettings() {
    const { fields } = await api.get("/api/train/settings");
    for (const f of fields) {
      const id = `train-setting-${f.name}`;
      const input = f.type === "choice" ? h("select", { id }, ...f.choices.map((c) => h("option", { value: c, selected: c === f.default }, c)))
        : f.type === "boolean" ? h("input", { id, type: "checkbox", checked: !!f.default })
          : h("input", { id, type: "number", step: "any", value: f.default ?? "", placeholder: f.nullable ? "automatic" : "" });
      fieldInputs[f.name] = { input, f };
      const help = h("p", { class: "help", id: `${id}-help`, hidden: true }, f.help);
      const info = h("button", { type: "button", class: "info", "aria-label": `About ${f.label}`, "aria-expanded": "false",
        onclick: () => { help.hidden = !help.hidden; info.setAttribute("aria-expanded", String(!help.hidden)); } }, "i");
      const row = h("div", { class: "field" }, h("label", { for: id }, f.label), input, info, help);
      (f.name === "steps" ? settingsBox : more).append(row);
      input.addEventListener("change", () => updateEstimate());
    }
  }

  function settings() {
    const out = {};
    for (const [key, { input, f }] of Object.entries(fieldInputs)) {
      const value = f.type === "boolean" ? input.checked : input.value;
      if (value === "" || value === f.default || (f.type !== "boolean" && f.type !== "choice" && Number(value) === f.default)) continue;
      out[key] = f.type === "boolean" || f.type === "choice" ? value : Number(value);
    }
    return out;
  }

  async function makeDataset() {
    const items = renderCaptions();
    const fields = captions.querySelectorAll("input");
    const pictures = items.map((item, i) => ({ ...(item.ref ? { ref: item.ref } : { image_id: item.image_id }), caption: fields[i].value }));
    try {
      dataset = await api.post("/api/datasets", { name: name.value, trigger: trigger.value, source: source.value, pictures });
      message.textContent = `Dataset "${dataset.name}" made with ${dataset.pictures.length} pictures.`;
      await updateEstimate();
    } catch (error) { message.textContent = error.detail; }
  }

  const body = () => ({ dataset: dataset.id, trigger: trigger.value, settings: settings() });

  async function updateEstimate() {
    if (!dataset) return;
    try {
      const e = await api.post("/api/train/estimate", body());
      estimate.textContent = e.seconds == null
        ? `${e.steps} steps; no estimate yet on ${e.device}: it is measured after a first training or generation with this model.`
        : `${e.steps} steps: about ${Math.max(1, Math.round(e.seconds / 60))} min on ${e.device} (from its ${e.basis}).`;
    } catch (error) { estimate.textContent = error.detail; }
  }

  async function start() {
    if (!dataset) await makeDataset();
    if (!dataset) return;
    try {
      job = await api.post("/api/train", body());
      progress.hidden = false; done.hidden = true;
      samples.replaceChildren();
      status.textContent = "Waiting for its turn…";
      timer = setInterval(poll, 1000);
    } catch (error) { message.textContent = error.detail; }
  }

  async function stop() {
    if (job) await api.del(`/api/jobs/${job.id}`).catch((error) => { message.textContent = error.detail; });
  }

  function drawLoss(losses) {
    if (!losses?.length) return;
    const max = Math.max(...losses), min = Math.min(...losses), span = max - min || 1;
    const points = losses.map((v, i) => `${(i / Math.max(losses.length - 1, 1)) * 300},${100 - ((v - min) / span) * 100}`).join(" ");
    curve.innerHTML = `<svg viewBox="0 0 300 100" width="300" height="100" role="img" aria-label="Loss curve, now ${losses.at(-1)}">` +
      `<polyline fill="none" stroke="currentColor" stroke-width="2" points="${points}"/></svg>`;
  }

  function drawSamples(sets) {
    samples.replaceChildren(...sets.map((s) => h("figure", {},
      h("img", { src: s.with, alt: `Sample at step ${s.step} with the trigger word`, width: 96, height: 96 }),
      h("img", { src: s.without, alt: `Sample at step ${s.step} without the trigger word`, width: 96, height: 96 }),
      h("figcaption", {}, `Step ${s.step}: with / without the trigger word`))));
  }

  async function poll() {
    const now = await api.get(`/api/jobs/${job.id}`);
    const p = now.progress;
    if (p && p.phase === "train") {
      status.textContent = `Step ${p.step} of ${p.total}, loss ${p.loss}` + (p.eta_s != null ? `, about ${Math.round(p.eta_s)} s left` : "");
      drawLoss(p.losses);
      if (p.samples?.length) drawSamples(p.samples);
    } else if (now.status === "running") status.textContent = "Loading the model…";
    if (["done", "failed", "cancelled"].includes(now.status)) {
      clearInterval(timer);
      if (now.status !== "done") { status.textContent = now.error || `Training ${now.status}.`; return; }
      finished(now);
    }
  }

  function finished(now) {
    const r = now.result;
    status.textContent = `Done: ${r.steps} steps, final loss ${r.final_loss?.toFixed(4)}.`;
    drawLoss(r.losses);
    const prompt = `${r.prompt_tag} ${r.trigger}`;
    const compareOut = h("div", { id: "train-compare" });
    done.hidden = false;
    done.replaceChildren(
      h("button", { type: "button", id: "train-use", onclick: () => useInGenerate?.({ prompt, model: now.recipe.model }) }, "Use in Generate"),
      h("button", { type: "button", onclick: () => whatChanged(r, now.recipe.model, compareOut) }, "What did training change"),
      h("p", {}, OVERFIT), compareOut);
  }

  async function whatChanged(r, model, out) {
    const tag = (w) => `<lora:${r.name}:${w}>`;
    const recipe = { prompt: `${tag(1)} ${r.trigger}, ${r.prompts?.without || ""}`, model, seed: 1234, steps: 20 };
    try {
      const job = await api.post("/api/compare", { recipe, x: `prompt_sr=${[1, 0, 0.5, 0.75].map(tag).join(",")}`,
        y: `prompt_sr=${r.trigger},someone` });
      out.textContent = `The comparison is queued as job ${job.id}; it appears on the Compare page and in the gallery when done.`;
    } catch (error) { out.textContent = error.detail; }
  }

  showGallery();
  showSettings().catch((error) => { message.textContent = error.detail; });
  return { show: () => showGallery() };
}
