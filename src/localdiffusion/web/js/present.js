// The presenter view, for the projector: the signed-in person's (the facilitator's) current generation, live and
// large, from their jobs in any tab (the event socket with tabs=all), then the last image it made. Minimal chrome.

import { api, clientId } from "./api.js";
import { h } from "./dom.js";

export function initPresent(root) {
  const picture = h("img", { class: "present-image", alt: "", hidden: true });
  const caption = h("p", { class: "present-caption", role: "status" }, "Waiting for the next generation…");
  const bar = h("progress", { class: "present-bar", max: 1, value: 0, hidden: true });
  root.append(h("figure", { class: "present-stage" }, picture, h("figcaption", {}, caption, bar)));
  let socket = null;
  let retry = 500;
  let started = false;

  function showImage(src, text) {
    picture.src = src;
    picture.hidden = false;
    caption.textContent = text;
  }

  function onEvent(event) {
    const data = event.data || {};
    if (event.type === "started") {
      caption.textContent = "Starting…";
      bar.hidden = false;
      bar.removeAttribute("value");
    } else if (event.type === "step") {
      if (event.preview) showImage(event.preview, `Step ${data.step ?? ""} of ${data.total ?? ""}`);
      if (data.total) {
        bar.max = data.total;
        bar.value = data.step || 0;
      }
      bar.hidden = false;
    } else if (event.type === "done") {
      bar.hidden = true;
      const ids = data.result?.images || [];
      if (ids.length) showImage(`/api/images/${ids[ids.length - 1]}/file`, data.result?.infotexts?.[0]?.split("\n")[0] || "Done.");
      else caption.textContent = "Done.";
      root.dataset.last = ids.length ? ids[ids.length - 1] : "";
    } else if (event.type === "failed" || event.type === "cancelled") {
      bar.hidden = true;
      caption.textContent = event.type === "failed" ? "That generation failed." : "Cancelled.";
    }
  }

  function again() {
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  }

  async function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let client;
    try {
      client = await clientId();
    } catch {
      again(); // the server is away, or the id was asked for before the page knew its session: ask again
      return;
    }
    socket = new WebSocket(`${scheme}//${location.host}/api/events?client=${encodeURIComponent(client)}&tabs=all`);
    socket.addEventListener("open", () => { retry = 500; root.dataset.live = "true"; });
    socket.addEventListener("message", (message) => {
      try { onEvent(JSON.parse(message.data)); } catch { /* not JSON */ }
    });
    socket.addEventListener("close", () => {
      root.dataset.live = "false";
      again();
    });
  }

  return {
    show() {
      document.body.classList.add("presenting");
      if (!started) {
        started = true;
        connect();
        // until the next generation, the last image made
        api.get("/api/images?limit=1").then(({ items }) => {
          if (items.length && picture.hidden) showImage(`/api/images/${items[0].id}/file`, items[0].prompt || "");
        }).catch(() => {});
      }
    },
    hide() {
      document.body.classList.remove("presenting");
    },
  };
}
