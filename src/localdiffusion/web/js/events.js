// Live job events over the WebSocket /api/events, for this tab's jobs only; reconnects on its own.

import { clientId } from "./api.js";

const listeners = new Set();
let socket = null;
let started = false;
let retryMs = 500;

function url(client) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/api/events?client=${encodeURIComponent(client)}`;
}

function retry() {
  socket = null;
  setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

async function connect() {
  let client;
  try {
    client = await clientId();
  } catch {
    retry();
    return;
  }
  socket = new WebSocket(url(client));
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
  socket.addEventListener("close", retry);
}

/** Call `listener(event)` for every event ({type, job_id, data, preview}); returns a function that stops it. */
export function onJobEvent(listener) {
  listeners.add(listener);
  if (!started) {
    started = true; // one connection, however many listeners arrive before it opens
    connect();
  }
  return () => listeners.delete(listener);
}

/** True once the socket is open (tests and the job view use it to know events will arrive). */
export function eventsConnected() {
  return socket?.readyState === WebSocket.OPEN;
}
