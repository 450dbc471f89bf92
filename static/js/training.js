// Training-run page: redraws the fields and two curves (loss, reward accuracy) on plain <canvas>.
// Live: every `job.progress` event on the run's websocket (ws/jobs/training/<id>/, sent by the worker)
// fetches progress.json at once; progress.json is also polled every 2 s (the embedded demo's in-memory
// channel layer cannot hear the worker). Server values are written with textContent only.
(function () {
  "use strict";

  const root = document.getElementById("training-run");
  if (!root) {
    return;
  }
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const pollUrl = root.dataset.pollUrl;
  let timer = null;

  function setField(name, value) {
    document.querySelectorAll('[data-run-field="' + name + '"]').forEach(function (element) {
      if (value !== undefined && value !== null) {
        element.textContent = String(value);
      }
    });
  }

  function draw(canvasId, points, key, fixedRange) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || !canvas.getContext) {
      return;
    }
    const ctx = canvas.getContext("2d");
    const data = points.filter(function (p) { return typeof p[key] === "number" && typeof p.step === "number"; });
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const pad = 32;
    ctx.strokeStyle = "#999";
    ctx.strokeRect(pad, 8, canvas.width - pad - 8, canvas.height - pad - 8);
    if (data.length === 0) {
      ctx.fillStyle = "#666";
      ctx.fillText("no points yet", pad + 8, 28);
      return;
    }
    const steps = data.map(function (p) { return p.step; });
    const values = data.map(function (p) { return p[key]; });
    const xMin = Math.min.apply(null, steps);
    const xMax = Math.max.apply(null, steps);
    const yMin = fixedRange ? fixedRange[0] : Math.min.apply(null, values);
    const yMax = fixedRange ? fixedRange[1] : Math.max.apply(null, values);
    const width = canvas.width - pad - 8;
    const height = canvas.height - pad - 8;
    const x = function (v) { return pad + (xMax > xMin ? ((v - xMin) / (xMax - xMin)) * width : width / 2); };
    const y = function (v) { return 8 + height - (yMax > yMin ? ((v - yMin) / (yMax - yMin)) * height : height / 2); };
    ctx.fillStyle = "#666";
    ctx.fillText(yMax.toPrecision(3), 2, 16);
    ctx.fillText(yMin.toPrecision(3), 2, 8 + height);
    ctx.fillText("step " + xMin, pad, canvas.height - 8);
    ctx.fillText("step " + xMax, canvas.width - 60, canvas.height - 8);
    ctx.strokeStyle = "#2a6fdb";
    ctx.lineWidth = 2;
    ctx.beginPath();
    data.forEach(function (p, i) {
      if (i === 0) {
        ctx.moveTo(x(p.step), y(p[key]));
      } else {
        ctx.lineTo(x(p.step), y(p[key]));
      }
    });
    ctx.stroke();
  }

  function accuracyKey(series) {
    return series.some(function (p) { return "rewards/accuracies" in p; }) ? "rewards/accuracies" : "accuracy";
  }

  function render(run) {
    setField("status", run.status.charAt(0).toUpperCase() + run.status.slice(1));
    setField("progress_done", run.progress_done);
    setField("progress_total", run.progress_total);
    setField("attempts", run.attempts);
    setField("output_model", run.output_model || "–");
    setField("logs", run.logs);
    const last = run.series.length ? run.series[run.series.length - 1] : {};
    if (typeof last.loss === "number") {
      setField("loss", last.loss.toPrecision(4));
    }
    if (typeof last.tokens_per_s === "number") {
      setField("tokens_per_s", Math.round(last.tokens_per_s));
    }
    const bar = root.querySelector("[data-run-bar]");
    if (bar) {
      bar.max = Math.max(run.progress_total, 1);
      bar.value = run.progress_done;
    }
    const errorBox = root.querySelector("[data-run-error]");
    if (errorBox) {
      setField("error", run.error);
      errorBox.hidden = !run.error;
    }
    draw("curve-loss", run.series, "loss", null);
    draw("curve-accuracy", run.series, accuracyKey(run.series), [0, 1]);
    setField("points", run.series.length);
    const curves = document.getElementById("curves");
    if (curves) {
      curves.dataset.points = String(run.series.length);
    }
    if (TERMINAL.has(run.status) && timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  }

  async function poll() {
    try {
      const response = await fetch(pollUrl, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        render(await response.json());
      }
    } catch (error) {
      // try again on the next tick
    }
  }

  const initial = document.getElementById("training-series");
  const series = initial ? JSON.parse(initial.textContent) : [];
  draw("curve-loss", series, "loss", null);
  draw("curve-accuracy", series, accuracyKey(series), [0, 1]);
  if (root.dataset.terminal !== "1") {
    timer = window.setInterval(poll, 2000);
    poll();
    if (root.dataset.socketUrl && "WebSocket" in window) {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      const socket = new WebSocket(scheme + window.location.host + root.dataset.socketUrl);
      socket.addEventListener("message", function () {
        poll();
        if (timer === null) {
          socket.close(); // terminal: nothing more to hear
        }
      });
    }
  }
})();
