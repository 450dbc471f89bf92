// Leaderboard page: redraws the ratings table (with 95% interval bars) and the win-rate matrix.
// Live: the page listens on ws/arena/leaderboard/ (arena/consumers.py relays "leaderboard.update",
// sent after each counted vote and each recompute) and then refetches the API for its category, at
// most once every few seconds. Names and numbers go in with textContent, never innerHTML.
(function () {
  "use strict";

  const dataElement = document.getElementById("leaderboard-data");
  const configElement = document.getElementById("leaderboard-config");
  if (!dataElement || !configElement) {
    return;
  }
  const config = JSON.parse(configElement.textContent);
  const MIN_REFRESH_MS = 3000;
  const MAX_DELAY_MS = 30000;
  const tbody = document.querySelector("#ratings tbody");
  const matrix = document.getElementById("win-rates");
  const live = document.getElementById("board-live");
  const computedAt = document.getElementById("computed-at");
  const select = document.getElementById("category");

  let lastRefresh = 0;
  let refreshTimer = null;
  let delayMs = 1000;

  function cell(tag, text, className) {
    const element = document.createElement(tag);
    if (text !== undefined && text !== null) {
      element.textContent = String(text);
    }
    if (className) {
      element.className = className;
    }
    return element;
  }

  function fixed(value) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(1);
  }

  function renderRows(rows) {
    const values = [];
    rows.forEach((row) => {
      [row.rating, row.ci_low, row.ci_high].forEach((v) => {
        if (v !== null && v !== undefined) {
          values.push(Number(v));
        }
      });
    });
    const low = values.length ? Math.min.apply(null, values) : 0;
    const span = values.length ? Math.max.apply(null, values) - low || 1 : 1;
    const percent = (v) => (100 * (v - low)) / span;
    tbody.textContent = "";
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell("td", "No rated battles yet.", "muted");
      td.colSpan = 11;
      tr.append(td);
      tbody.append(tr);
      return;
    }
    rows.forEach((row) => {
      const tr = document.createElement("tr");
      tr.dataset.model = row.model;
      const rank = cell("td", row.provisional ? null : row.rank_ub === null ? "–" : row.rank_ub, "num");
      if (row.provisional) {
        rank.append(cell("span", "provisional", "muted"));
      }
      const spread = cell("td", row.rank_lb === null ? "" : row.rank_ub + "–" + row.rank_lb, "num");
      tr.append(rank, spread, cell("td", row.model));
      const rating = cell("td", null, "num");
      if (row.rating === null) {
        rating.append(cell("span", "not yet ratable", "muted"));
      } else {
        rating.textContent = fixed(row.rating);
      }
      tr.append(rating);
      const interval = cell("td");
      if (row.rating !== null) {
        const ciLow = row.ci_low === null ? row.rating : row.ci_low;
        const ciHigh = row.ci_high === null ? row.rating : row.ci_high;
        const track = cell("div", null, "ci-track");
        track.title = fixed(ciLow) + " – " + fixed(ciHigh);
        const bar = cell("div", null, "ci-bar");
        bar.style.left = percent(ciLow) + "%";
        bar.style.width = percent(ciHigh) - percent(ciLow) + "%";
        const point = cell("div", null, "ci-point");
        point.style.left = percent(row.rating) + "%";
        track.append(bar, point);
        interval.append(track);
        if (row.ci_low !== null) {
          interval.append(cell("small", fixed(row.ci_low) + " – " + fixed(row.ci_high), "muted"));
        }
      }
      tr.append(interval, cell("td", fixed(row.elo), "num"), cell("td", row.battles, "num"));
      tr.append(cell("td", row.component, "num"));
      const price = (v) => (v === null || v === undefined ? "–" : String(v));
      tr.append(
        cell("td", row.first_token_ms === null ? "–" : Math.round(row.first_token_ms), "num"),
        cell("td", row.tokens_per_second === null ? "–" : fixed(row.tokens_per_second), "num"),
        cell("td", price(row.price_input_per_million) + " / " + price(row.price_output_per_million), "num"),
      );
      tbody.append(tr);
    });
  }

  function renderMatrix(board) {
    matrix.textContent = "";
    if (!board.models.length) {
      return;
    }
    const head = document.createElement("thead");
    const headRow = document.createElement("tr");
    headRow.append(cell("th", ""));
    board.models.forEach((name) => {
      const th = cell("th", name);
      th.scope = "col";
      headRow.append(th);
    });
    head.append(headRow);
    const body = document.createElement("tbody");
    board.models.forEach((name, i) => {
      const tr = document.createElement("tr");
      const th = cell("th", name);
      th.scope = "row";
      tr.append(th);
      board.models.forEach((other, j) => {
        const rate = board.win_rates[i][j];
        const td = cell("td", rate === null ? "" : rate.toFixed(2));
        if (rate !== null) {
          td.title = name + " vs " + other + ": " + board.battle_counts[i][j] + " battles";
          // green when the row model wins more, red when it loses more
          const hue = rate >= 0.5 ? "19, 122, 67" : "180, 35, 24";
          td.style.background = "rgba(" + hue + ", " + (Math.abs(rate - 0.5) * 1.6).toFixed(2) + ")";
        }
        tr.append(td);
      });
      body.append(tr);
    });
    matrix.append(head, body);
  }

  function render(board) {
    renderRows(board.rows);
    renderMatrix(board);
    if (computedAt) {
      computedAt.textContent = board.computed_at
        ? new Date(board.computed_at).toISOString().slice(0, 19).replace("T", " ") + " UTC"
        : "not yet";
    }
  }

  async function refresh() {
    refreshTimer = null;
    lastRefresh = Date.now();
    try {
      const url =
        config.api_url +
        "?category=" +
        encodeURIComponent(config.category) +
        "&control=" +
        encodeURIComponent(config.control || "") +
        "&source=" +
        encodeURIComponent(config.source || "");
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        render(await response.json());
        live.textContent = "updated " + new Date().toLocaleTimeString();
      }
    } catch (ignored) {
      // the next update retries
    }
  }

  function scheduleRefresh() {
    if (refreshTimer) {
      return;
    }
    const wait = Math.max(0, lastRefresh + MIN_REFRESH_MS - Date.now());
    refreshTimer = window.setTimeout(refresh, wait);
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + config.websocket);
    socket.addEventListener("open", () => {
      delayMs = 1000;
      live.textContent = "live";
    });
    socket.addEventListener("message", (event) => {
      let data = null;
      try {
        data = JSON.parse(event.data);
      } catch (ignored) {
        return;
      }
      if (data.type === "leaderboard.update") {
        scheduleRefresh();
      }
    });
    socket.addEventListener("close", () => {
      live.textContent = "reconnecting…";
      window.setTimeout(connect, delayMs);
      delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
    });
  }

  const controlSelect = document.getElementById("control");
  if (controlSelect) {
    controlSelect.addEventListener("change", () => controlSelect.form.submit());
  }
  if (select) {
    select.addEventListener("change", () => select.form.submit());
  }
  const sourceSelect = document.getElementById("source");
  if (sourceSelect) {
    sourceSelect.addEventListener("change", () => sourceSelect.form.submit());
  }
  render(JSON.parse(dataElement.textContent));
  connect();
})();
