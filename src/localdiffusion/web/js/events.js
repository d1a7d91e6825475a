// Live job events over the WebSocket /api/events, for this tab's jobs only; reconnects on its own.

import { clientId } from "./api.js";

const listeners = new Set();
let socket = null;
let retryMs = 500;

function url() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/events?client=${encodeURIComponent(clientId)}`;
}

function connect() {
  socket = new WebSocket(url());
  socket.addEventListener("open", () => {
    retryMs = 500;
  });
  socket.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    for (const listener of listeners) listener(event);
  });
  socket.addEventListener("close", () => {
    socket = null;
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  });
}

/** Call `listener(event)` for every event ({type, job_id, data, preview}); returns a function that stops it. */
export function onJobEvent(listener) {
  listeners.add(listener);
  if (!socket) connect();
  return () => listeners.delete(listener);
}

/** True once the socket is open (tests and the job view use it to know events will arrive). */
export function eventsConnected() {
  return socket?.readyState === WebSocket.OPEN;
}
