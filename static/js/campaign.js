// Campaign page: live progress over the campaign's websocket (annotations/consumers.py).
// Every value from the server is written with textContent or element properties, never innerHTML:
// usernames are user-controlled text. Plain JS, no framework, nothing loaded from a CDN.
// The server sends each viewer only the rows they may see (annotators: their own; annotations/consumers.py).
(function () {
  "use strict";

  const root = document.getElementById("campaign-progress");
  if (!root || !("WebSocket" in window)) {
    return;
  }
  const path = root.dataset.wsPath;
  const status = root.querySelector("[data-progress-status]");
  const bar = root.querySelector("[data-progress-bar]");
  const perAnnotator = root.querySelector('[data-progress="per_annotator"]');
  // Close codes the consumer uses for "not logged in" and "not a member": retrying cannot help.
  const FINAL_CODES = new Set([4401, 4403, 4404]);
  const MAX_DELAY_MS = 30000;
  let delayMs = 1000;

  function setStatus(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function setField(name, value) {
    const element = root.querySelector('[data-progress="' + name + '"]');
    if (element && value !== undefined && value !== null) {
      element.textContent = String(value);
    }
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function renderPerAnnotator(rows) {
    if (!perAnnotator || !Array.isArray(rows)) {
      return;
    }
    const fresh = [];
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.append(
        cell(String(row.annotator ?? "")),
        cell(String(row.judgments ?? 0)),
        cell(String(Math.round(Number(row.mean_time_ms) || 0))),
      );
      fresh.push(tr);
    }
    if (fresh.length === 0) {
      const tr = document.createElement("tr");
      const td = cell("No judgments yet.");
      td.colSpan = 3;
      td.className = "muted";
      tr.append(td);
      fresh.push(tr);
    }
    perAnnotator.replaceChildren(...fresh);
  }

  function render(progress) {
    setField("items_done", progress.items_done);
    setField("items_total", progress.items_total);
    setField("judgments", progress.judgments);
    if (bar) {
      bar.max = Math.max(Number(progress.items_total) || 0, 1);
      bar.value = Number(progress.items_done) || 0;
    }
    renderPerAnnotator(progress.per_annotator);
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + path);
    socket.addEventListener("open", function () {
      delayMs = 1000;
      setStatus("· live");
    });
    socket.addEventListener("message", function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return; // not ours; ignore rather than break the page
      }
      if (message && message.type === "progress" && message.progress) {
        render(message.progress);
      }
    });
    socket.addEventListener("close", function (event) {
      if (FINAL_CODES.has(event.code)) {
        setStatus("");
        return;
      }
      // The server restarted or the network dropped: back off so many open pages do not stampede it.
      setStatus("· reconnecting…");
      window.setTimeout(connect, delayMs);
      delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
    });
  }

  connect();
})();
