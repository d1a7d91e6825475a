// The facilitator's console: the participants (freeze, new password), the queue (pause, resume, cancel, move to
// the front), usage and its energy estimate, the workers (GET /api/workers: each worker, its models and job), the limits and the model allow-list, joining (code and QR code),
// the whole class's export and the audit log. It refreshes itself every few seconds while shown.

import { api, request } from "./api.js";
import { h, toast } from "./dom.js";

const REFRESH_MS = 3000;
const LIMITS = [
  ["max_queued", "Jobs waiting or running at once"],
  ["max_images_per_job", "Images per job"],
  ["max_pixels", "Pixels per image"],
  ["max_steps", "Sampling steps"],
  ["gpu_seconds_per_hour", "GPU-seconds per hour"],
  ["max_train_steps", "Steps of one training"],
];

const seconds = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
const when = (at) => new Date(at * 1000).toLocaleTimeString();

function section(title, ...children) {
  const id = `console-${title.toLowerCase().replace(/[^a-z]+/g, "-")}`;
  return h("section", { class: "console-part", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export function initConsole(root) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const people = h("tbody");
  const password = h("p", { class: "console-password", role: "status" });
  const queueState = h("p", { class: "console-queue-state", role: "status" });
  const queueRows = h("tbody");
  const pause = h("button", { type: "button", onclick: () => act(() => api.post("/api/class/queue/pause"), "Queue paused.") }, "Pause all");
  const resume = h("button", { type: "button", onclick: () => act(() => api.post("/api/class/queue/resume"), "Queue resumed.") }, "Resume all");
  const usage = h("div", { class: "console-usage" });
  const workerRows = h("tbody");
  const audit = h("ol", { class: "console-audit" });
  const limitsForm = h("form", { class: "console-limits", onsubmit: (event) => { event.preventDefault(); saveLimits(); } });
  const joinBox = h("div", { class: "console-join" });

  root.append(
    h("p", { class: "console-links" },
      h("a", { href: "#/present", target: "_blank", rel: "noopener" }, "Open the presenter view"), " · ",
      h("a", { href: "/api/class/export", download: "" }, "Download the whole class's work (zip)")),
    error,
    section("Participants",
      h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Participants" }, h("table", { class: "console-people" },
        h("thead", {}, h("tr", {}, ...["Name", "Online", "Queued", "Running", "GPU-seconds today", "Images", "Paused", ""].map((t) => h("th", { scope: "col" }, t)))),
        people)),
      password),
    section("Queue", h("p", { class: "console-actions" }, pause, " ", resume), queueState,
      h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Queue" }, h("table", { class: "console-queue" },
        h("thead", {}, h("tr", {}, ...["#", "Whose", "Kind", "Status", "Estimate", ""].map((t) => h("th", { scope: "col" }, t)))),
        queueRows))),
    section("Usage today", usage),
    section("Workers",
      h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Workers" }, h("table", { class: "console-workers" },
        h("thead", {}, h("tr", {}, ...["Worker", "Machine", "Device", "Models loaded", "Running", "Jobs done", "GPU time", "Last seen"].map((t) => h("th", { scope: "col" }, t)))),
        workerRows))),
    section("Limits and models", limitsForm),
    section("Joining", joinBox),
    section("Audit log", audit),
  );

  async function act(call, done) {
    error.hidden = true;
    try {
      await call();
      if (done) toast(done);
    } catch (failure) {
      error.textContent = failure.detail || failure.message;
      error.hidden = false;
    }
    await refresh();
  }

  function personRow(p) {
    const manage = p.role === "facilitator" ? [] : [
      h("button", {
        type: "button", "aria-label": `${p.frozen ? "Unfreeze" : "Freeze"} ${p.name}`,
        onclick: () => act(() => api.post(`/api/class/users/${encodeURIComponent(p.name)}/${p.frozen ? "unfreeze" : "freeze"}`),
          `${p.name} ${p.frozen ? "may queue again" : "is paused"}.`),
      }, p.frozen ? "Unfreeze" : "Freeze")];
    manage.push(" ", h("button", {
      type: "button", "aria-label": `New password for ${p.name}`,
      onclick: () => act(async () => {
        const made = await api.post(`/api/class/users/${encodeURIComponent(p.name)}/password`);
        password.replaceChildren(`New password for ${made.name} (shown this once): `, h("code", {}, made.password));
      }),
    }, "New password"));
    return h("tr", { dataset: { user: p.name } },
      h("th", { scope: "row" }, p.name, p.role === "facilitator" ? " (facilitator)" : ""),
      h("td", {}, p.online ? "● online" : "–"), h("td", {}, p.queued), h("td", {}, p.running),
      h("td", {}, p.gpu_seconds_today), h("td", {}, p.images), h("td", { class: "frozen" }, p.frozen ? "paused" : "no"),
      h("td", {}, ...manage));
  }

  function queueRow(job) {
    const buttons = [];
    if (job.status === "queued" && job.id !== undefined) {
      buttons.push(h("button", { type: "button", "aria-label": `Move job ${job.id} to the front`,
        onclick: () => act(() => api.post(`/api/jobs/${job.id}/front`), `Job ${job.id} runs next.`) }, "To the front"), " ");
    }
    if (job.id !== undefined) {
      buttons.push(h("button", { type: "button", "aria-label": `Cancel job ${job.id}`,
        onclick: () => act(() => api.del(`/api/jobs/${job.id}`), `Job ${job.id} cancelled.`) }, "Cancel"));
    }
    return h("tr", { dataset: { job: job.id } },
      h("td", {}, job.status === "running" ? "▶" : job.position + 1), h("td", {}, job.owner ?? "someone"),
      h("td", {}, job.kind), h("td", {}, job.status + (job.front ? " (front)" : "") + (job.demo ? " (demo)" : "")),
      h("td", {}, seconds(job.estimated_seconds)), h("td", {}, ...buttons));
  }

  function showUsage(u) {
    const rows = u.devices.map((d) => h("tr", {},
      h("th", { scope: "row" }, d.device), h("td", {}, d.jobs), h("td", {}, seconds(d.gpu_seconds)),
      h("td", {}, `${d.energy_wh.toFixed(1)} Wh`), h("td", { class: "muted" }, d.note)));
    usage.replaceChildren(
      h("p", { class: "console-total" }, `Class total today: ${u.jobs} jobs, ${seconds(u.gpu_seconds)} of GPU time, `,
        h("strong", {}, `${u.estimate ? "about " : ""}${u.energy_wh.toFixed(1)} Wh`),
        u.estimate ? " (an estimate: nominal power, not measured)" : " (from the GPU's reported power draw)"),
      rows.length ? h("div", { class: "table-wrap", role: "region", tabindex: "0", "aria-label": "Devices" }, h("table", { class: "console-devices" },
        h("thead", {}, h("tr", {}, ...["Device", "Jobs", "GPU time", "Energy", "Where the power figure comes from"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, ...rows))) : h("p", { class: "muted" }, "No job has finished today."));
  }

  function workerRow(w) {
    return h("tr", { dataset: { worker: w.id } },
      h("th", { scope: "row" }, w.id), h("td", {}, w.node), h("td", {}, w.device),
      h("td", {}, w.models.length ? w.models.join(", ") : "none"), h("td", {}, w.job == null ? "idle" : `job ${w.job}`),
      h("td", {}, w.jobs_done), h("td", {}, seconds(w.gpu_seconds)), h("td", {}, when(w.last_seen)));
  }

  let limitsShown = false;
  async function showLimits() {
    const [limits, models] = await Promise.all([api.get("/api/class/limits"), api.get("/api/models?kind=checkpoint").catch(() => [])]);
    const names = (Array.isArray(models) ? models : models.items || []).filter((m) => !m.kind || m.kind === "checkpoint").map((m) => m.name);
    const allowed = new Set(limits.models || names);
    limitsForm.replaceChildren(
      ...LIMITS.map(([key, label]) => h("div", { class: "field" }, h("label", { for: `limit-${key}` }, label),
        h("input", { id: `limit-${key}`, name: key, type: "number", min: 1, value: limits.participant[key] ?? "", placeholder: "no limit" }))),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "may_train", checked: !!limits.participant.may_train }),
        " Participants may train a LoRA or an embedding"),
      h("fieldset", {}, h("legend", {}, "Checkpoints participants may use"),
        ...(names.length ? names.map((name) => h("label", { class: "check" },
          h("input", { type: "checkbox", name: "model", value: name, checked: allowed.has(name) }), ` ${name}`))
          : [h("p", { class: "muted" }, "No checkpoint is installed.")])),
      h("button", { type: "submit", class: "primary" }, "Save limits"));
    limitsShown = true;
  }

  async function saveLimits() {
    const data = new FormData(limitsForm);
    const participant = Object.fromEntries(LIMITS.map(([key]) => [key, data.get(key) === "" ? null : Number(data.get(key))]));
    participant.may_train = data.get("may_train") === "on";
    const boxes = [...limitsForm.querySelectorAll("input[name=model]")];
    const models = boxes.every((b) => b.checked) ? null : boxes.filter((b) => b.checked).map((b) => b.value);
    await act(() => request("PUT", "/api/class/limits", { participant, models }), "Limits saved.");
    await showLimits();
  }

  async function showJoin() {
    const join = await api.get("/api/class/join");
    const code = h("input", { id: "join-code", value: join.code || "", minLength: 4, placeholder: "made for you when left empty" });
    const address = h("input", { id: "join-address", value: join.address, placeholder: "http://this-machine:7860/" });
    joinBox.replaceChildren(
      h("p", { role: "status", class: "console-join-state" }, join.enabled ? `Joining is on: code ${join.code}` : "Joining is off: only the accounts you made can sign in."),
      h("div", { class: "field" }, h("label", { for: "join-code" }, "Join code"), code),
      h("div", { class: "field" }, h("label", { for: "join-address" }, "The studio's address as the room reaches it"), address),
      h("p", { class: "console-actions" },
        h("button", { type: "button", class: "primary", onclick: () => setJoin(true, code.value, address.value) }, join.enabled ? "Save" : "Turn joining on"), " ",
        join.enabled ? h("button", { type: "button", onclick: () => setJoin(false, null, address.value) }, "Turn joining off") : null),
      join.enabled ? h("figure", { class: "console-qr" },
        h("img", { src: `/api/class/join/qr.svg?v=${encodeURIComponent(join.url)}`, alt: `QR code of ${join.url}` }),
        h("figcaption", {}, join.url)) : null);
  }

  async function setJoin(enabled, code, address) {
    await act(() => request("PUT", "/api/class/join", { enabled, code: code || null, address: address || null }),
      enabled ? "Joining is on." : "Joining is off.");
    await showJoin();
  }

  async function refresh() {
    try {
      const [users, queue, use, log, workers] = await Promise.all([api.get("/api/class/users"), api.get("/api/queue"),
        api.get("/api/class/usage"), api.get("/api/class/audit?limit=50"), api.get("/api/workers")]);
      workerRows.replaceChildren(...(workers.length ? workers.map(workerRow)
        : [h("tr", {}, h("td", { colspan: 8 }, "No worker is running jobs: the server has none yet, or all were lost."))]));
      people.replaceChildren(...users.map(personRow));
      queueRows.replaceChildren(...(queue.length ? queue.map(queueRow) : [h("tr", {}, h("td", { colspan: 6 }, "Nothing is waiting."))]));
      root.dataset.paused = String(use.queue.paused);
      queueState.textContent = use.queue.paused ? "The queue is paused: nothing new starts until you resume it." : "The queue is running.";
      showUsage(use);
      audit.replaceChildren(...log.map((a) => h("li", {}, `${when(a.at)} · ${a.actor} · ${a.action}${a.target ? ` · ${a.target}` : ""}`)));
    } catch (failure) {
      error.textContent = failure.detail || failure.message;
      error.hidden = false;
    }
  }

  let timer = 0;
  return {
    async show() {
      await refresh();
      if (!limitsShown) await Promise.all([showLimits(), showJoin()]);
      clearInterval(timer);
      timer = setInterval(() => { if (!root.hidden) refresh(); }, REFRESH_MS);
    },
  };
}
