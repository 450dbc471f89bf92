// Job page: live status and progress of a generation or scoring job (workers/consumers.py).
// Two sources, one renderer:
//  - the job's websocket, which relays the {"type": "job.progress", "job": {...}} events the worker
//    sends after each batch; reconnects with backoff;
//  - progress.json, polled every 3 s while the socket is not open. The embedded demo runs Channels'
//    in-memory layer, which lives inside the web process: a worker process cannot reach it, so there
//    the socket opens but never hears from the worker. The server says so (data-poll-always="1") and
//    the page then polls whatever the socket does.
// When the job reaches a terminal state the page fetches progress.json once more (it carries the
// finish time the broadcast lacks), shows the final state, and stops polling and reconnecting.
// Every value from the server is written with textContent or element properties, never innerHTML:
// error messages may quote model output. Plain JS, no framework, nothing loaded from a CDN.
(function () {
  "use strict";

  const root = document.getElementById("job-progress");
  if (!root) {
    return;
  }
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  // Close codes the consumer uses for "not logged in" and "not allowed": retrying cannot help.
  const FINAL_CODES = new Set([4401, 4403, 4404]);
  const POLL_MS = 3000;
  const MAX_DELAY_MS = 30000;
  const wsPath = root.dataset.wsPath;
  const pollUrl = root.dataset.pollUrl;
  const pollAlways = root.dataset.pollAlways === "1";
  const throughputKey = root.dataset.throughputKey;
  const live = root.querySelector("[data-job-live]");
  const bar = root.querySelector("[data-job-bar]");
  const errorBox = root.querySelector("[data-job-error]");
  const cancelForm = root.querySelector("[data-job-cancel]");
  const cancelRequested = root.querySelector("[data-job-cancel-requested]");
  const reloadNotice = root.querySelector("[data-job-reload]");
  const startedTerminal = root.dataset.terminal === "1";

  let socket = null;
  let finished = startedTerminal;
  let delayMs = 1000;
  let pollTimer = null;
  let polling = false;

  function setLive(text) {
    if (live) {
      live.textContent = text;
    }
  }

  function setField(name, value) {
    const element = root.querySelector('[data-job-field="' + name + '"]');
    if (element && value !== undefined && value !== null) {
      element.textContent = String(value);
    }
  }

  function timestamp(iso) {
    // Same form as the server-rendered "2026-11-23 19:58:01 UTC".
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) {
      return "–";
    }
    return date.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function render(job) {
    if (!job || typeof job !== "object") {
      return;
    }
    const status = String(job.status || "");
    if (status) {
      setField("status", status.charAt(0).toUpperCase() + status.slice(1));
      const badge = root.querySelector('[data-job-field="status"]');
      if (badge) {
        badge.dataset.status = status;
      }
    }
    const done = Number(job.progress_done) || 0;
    const total = Number(job.progress_total) || 0;
    setField("progress_done", done);
    setField("progress_total", total);
    setField("percent", total ? Math.min(100, Math.round((100 * done) / total)) : 0);
    if (bar) {
      bar.max = Math.max(total, 1);
      bar.value = done;
    }
    setField("attempts", job.attempts);
    setField("max_attempts", job.max_attempts);
    const metrics = job.metrics && typeof job.metrics === "object" ? job.metrics : {};
    if (metrics[throughputKey] !== undefined) {
      setField("throughput", metrics[throughputKey]);
    }
    ["tokens", "duplicates_regenerated", "duplicates_dropped"].forEach((name) => {
      if (metrics[name] !== undefined) {
        setField(name, metrics[name]);
      }
    });
    if ("started_at" in job) {
      setField("started_at", job.started_at ? timestamp(job.started_at) : "–");
    }
    if ("finished_at" in job) {
      setField("finished_at", job.finished_at ? timestamp(job.finished_at) : "–");
    }
    if (errorBox && typeof job.error === "string") {
      setField("error", job.error);
      errorBox.hidden = job.error === "";
    }
    const terminal = TERMINAL.has(status);
    if (cancelRequested) {
      cancelRequested.hidden = !job.cancel_requested || terminal;
    }
    if (terminal) {
      finish();
    }
  }

  function finish() {
    if (finished) {
      return;
    }
    finished = true;
    if (cancelForm) {
      cancelForm.hidden = true;
    }
    if (reloadNotice && !startedTerminal) {
      reloadNotice.hidden = false; // the outputs table and settings were rendered before the end
    }
    stopPolling();
    setLive("");
    if (socket) {
      socket.close(1000);
    }
    pollOnce(); // the broadcast snapshot has no finish time; progress.json does
  }

  async function pollOnce() {
    if (polling) {
      return;
    }
    polling = true;
    try {
      const response = await fetch(pollUrl, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (response.ok && (response.headers.get("Content-Type") || "").includes("application/json")) {
        render(await response.json());
      } else if (response.status === 404 || response.redirected) {
        stopPolling(); // the job is gone or the session ended: polling cannot help
        setLive("· not available");
      }
    } catch (error) {
      // Network hiccup: the next tick tries again.
    } finally {
      polling = false;
    }
  }

  function startPolling() {
    if (finished || pollTimer !== null) {
      return;
    }
    pollTimer = window.setInterval(pollOnce, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer !== null) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function connect() {
    if (finished || !("WebSocket" in window)) {
      return;
    }
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + wsPath);
    socket.addEventListener("open", function () {
      delayMs = 1000;
      if (!pollAlways) {
        stopPolling();
      }
      setLive(pollAlways ? "· updating" : "· live");
    });
    socket.addEventListener("message", function (event) {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return; // not ours; ignore rather than break the page
      }
      if (message && message.type === "job.progress") {
        render(message.job);
      }
    });
    socket.addEventListener("close", function (event) {
      socket = null;
      if (finished) {
        return;
      }
      startPolling();
      if (FINAL_CODES.has(event.code)) {
        setLive("· updating");
        return; // polling still works if the session comes back; the socket would not
      }
      // The server restarted or the network dropped: back off so many open pages do not stampede it.
      setLive("· reconnecting…");
      window.setTimeout(connect, delayMs);
      delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
    });
  }

  if (finished) {
    return; // rendered terminal: the page already shows the final state
  }
  // Poll from the start; the socket's "open" stops it again (unless pollAlways).
  startPolling();
  connect();
})();
