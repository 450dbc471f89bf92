/* PrefArena: the annotator's page. Leases an item from the JSON API, collects a judgment
 * (pairwise, ranking or rating), submits it, and asks for the next one.
 *
 * Security: prompts and model outputs are untrusted. The rendered view shows the HTML the server made of them
 * (`html` fields: Markdown rendered, raw HTML escaped, sanitised by prefarena/rendering.py) through
 * PrefText.showHtml (static/js/textview.js); the raw view and the word diff put text in as text nodes
 * (textContent), never through innerHTML; CSS `white-space: pre-wrap` keeps their layout.
 * Answers are sent in *presented* terms ("a" = the first response shown); the server maps them to
 * canonical positions with the lease's presented order.
 */
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("annotate-config").textContent);
  const byId = (id) => document.getElementById(id);
  const el = {
    message: byId("message"), loading: byId("loading"), done: byId("done"), work: byId("work"),
    prompt: byId("prompt"), responses: byId("responses"),
    pairwise: byId("pairwise-controls"), ranking: byId("ranking-controls"), rating: byId("rating-controls"),
    summary: byId("choice-summary"), rankingList: byId("ranking-list"), cannotRank: byId("cannot-rank"),
    ratingForm: byId("rating-form"), rationale: byId("rationale"), edited: byId("edited-answer"),
    editFrom: byId("edit-from"), extras: byId("extras"), submit: byId("submit"), skip: byId("skip"),
    leaseInfo: byId("lease-info"), help: byId("help"), helpButton: byId("help-button"), helpClose: byId("help-close"),
    skipDialog: byId("skip-dialog"), skipForm: byId("skip-form"), skipReason: byId("skip-reason"),
    skipError: byId("skip-error"), skipCancel: byId("skip-cancel"), guidelines: byId("guidelines"),
    progressBar: byId("progress-bar"), progressText: byId("progress-text"), myCount: byId("my-count"),
    checkAgain: byId("check-again"),
    viewRaw: byId("view-raw"), viewSync: byId("view-sync"), viewDiff: byId("view-diff"),
    viewDiffLabel: byId("view-diff-label"), diffNote: byId("diff-note"),
    viewActual: byId("view-actual"), viewActualLabel: byId("view-actual-label"),
  };

  const MAX_TIME_MS = 24 * 3600 * 1000; // the API's upper bound for time_spent_ms

  const state = {
    lease: null,          // the lease JSON of the item on screen
    key: null,            // idempotency key of this item's submission; reused on retries
    startedAt: 0,         // performance.now() when the item was shown
    busy: false,
    expiryTimer: null,
    messageTimer: null,
    itemsDone: cfg.items_done,
    itemsTotal: cfg.items_total,
    mine: cfg.my_judgments,
    pair: { choice: null, strength: "clear" },
    rank: { order: [], tied: new Set(), selected: 0 },
    dragFrom: null,
    helpReturnFocus: null,
  };

  // --- small DOM helpers -------------------------------------------------------------------------
  /** Build an element. Children that are strings become text nodes, so they are never parsed as HTML. */
  function h(tag, props, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function contentText(content) {
    if (typeof content === "string") return content;
    if (Array.isArray(content)) {
      // OpenAI-style content parts: [{type: "text", text: "..."}, ...]
      return content
        .map((part) => (part && typeof part === "object" ? (part.text ?? JSON.stringify(part)) : String(part)))
        .join("\n");
    }
    return content == null ? "" : JSON.stringify(content, null, 2);
  }

  function snippet(text, length) {
    const flat = String(text).replace(/\s+/g, " ").trim();
    return flat.length > length ? flat.slice(0, length - 1) + "…" : flat;
  }

  function newIdempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // randomUUID needs a secure context (https or localhost); getRandomValues does not.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // --- API ---------------------------------------------------------------------------------------
  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  /** POST JSON with the session cookie and CSRF header. Throws only on network failure. */
  async function post(path, body) {
    const response = await fetch(cfg.api_root + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (_error) { data = null; }
    }
    return { status: response.status, data };
  }

  // --- messages ----------------------------------------------------------------------------------
  /** kind: "error" | "ok" | "info". `lines` are extra details; `action` is {label, run}. */
  function showMessage(kind, text, lines, action) {
    clearTimeout(state.messageTimer);
    el.message.replaceChildren(h("strong", { text }));
    if (lines && lines.length) el.message.append(h("ul", null, lines.map((line) => h("li", { text: line }))));
    if (action) el.message.append(h("button", { type: "button", class: "msg-action", onclick: action.run, text: action.label }));
    el.message.className = `msg msg-${kind}`;
    el.message.setAttribute("role", kind === "error" ? "alert" : "status");
    el.message.hidden = false;
    if (kind === "ok") state.messageTimer = setTimeout(clearMessage, 4000);
  }

  function clearMessage() {
    clearTimeout(state.messageTimer);
    el.message.hidden = true;
    el.message.replaceChildren();
  }

  /** Field messages of a 400 body: {"field": ["message", ...], "detail": "..."}. */
  function fieldLines(data) {
    if (!data || typeof data !== "object") return [];
    const lines = [];
    for (const [field, value] of Object.entries(data)) {
      if (field === "detail") continue;
      for (const message of Array.isArray(value) ? value : [value]) {
        lines.push(`${field.replace(/_/g, " ")}: ${typeof message === "string" ? message : JSON.stringify(message)}`);
      }
    }
    return lines;
  }

  const nextAction = { label: "Get the next item", run: () => loadNext() };

  function reportFailure(result, what) {
    const detail = result.data && typeof result.data.detail === "string" ? result.data.detail : "";
    if (result.status === 400) {
      showMessage("error", detail || `The server did not accept ${what}; nothing was lost, correct it and submit again.`,
        fieldLines(result.data));
    } else if (result.status === 409) {
      showMessage("error", detail || `${what} conflicts with the current state.`, [], nextAction);
    } else if (result.status === 401 || result.status === 403) {
      showMessage("error", `${detail || "Not allowed."} Your session may have ended: log in again in another tab, then retry.`);
    } else if (result.status === 404) {
      showMessage("error", detail || "Not found: this item or campaign is not available to you.", [], nextAction);
    } else {
      showMessage("error", `${what} failed (HTTP ${result.status}). ${detail}`.trim());
    }
  }

  // --- progress ----------------------------------------------------------------------------------
  function renderProgress() {
    el.progressBar.max = Math.max(state.itemsTotal, 1);
    el.progressBar.value = state.itemsDone;
    el.progressText.textContent = `${state.itemsDone} / ${state.itemsTotal} items done`;
    el.myCount.textContent = String(state.mine);
  }

  // --- loading an item ---------------------------------------------------------------------------
  async function loadNext() {
    clearTimeout(state.expiryTimer);
    state.lease = null;
    el.work.hidden = true;
    el.done.hidden = true;
    el.loading.hidden = false;
    let result;
    try {
      result = await post(`campaigns/${cfg.campaign}/next/`);
    } catch (_error) {
      el.loading.hidden = true;
      showMessage("error", "Could not reach the server. Check your connection.", [], { label: "Try again", run: () => loadNext() });
      return;
    }
    el.loading.hidden = true;
    if (result.status === 204) {
      el.done.hidden = false;
      return;
    }
    if (result.status !== 200 || !result.data) {
      const detail = result.data && result.data.detail ? result.data.detail : `HTTP ${result.status}`;
      showMessage("error", `No item could be fetched: ${detail}`, [], { label: "Try again", run: () => loadNext() });
      return;
    }
    render(result.data);
  }

  function render(lease) {
    state.lease = lease;
    state.key = newIdempotencyKey();
    renderPrompt(lease);
    renderResponses(lease.responses);
    paintTexts();
    el.pairwise.hidden = lease.kind !== "pairwise";
    el.ranking.hidden = lease.kind !== "ranking";
    el.rating.hidden = lease.kind !== "rating";
    if (lease.kind === "pairwise") {
      state.pair = { choice: null, strength: "clear" };
      renderPair();
    } else if (lease.kind === "ranking") {
      state.rank = { order: lease.responses.map((r) => r.index), tied: new Set(), selected: 0 };
      el.cannotRank.checked = false;
      renderRanking(false);
    } else if (lease.kind === "rating") {
      renderRating(lease.responses);
    }
    el.rationale.value = "";
    el.edited.value = "";
    el.extras.open = false;
    renderEditFrom(lease.responses);
    renderLeaseInfo(lease);
    el.work.dataset.item = String(lease.item);
    el.work.hidden = false;
    // A fresh item starts with focus on the work area, so Enter cannot re-press a stale button.
    el.work.focus({ preventScroll: true });
    state.startedAt = performance.now();
  }

  /** The prompt's messages as [{role, text, html}]: html from the lease's `prompt_html`, one per message. */
  function promptMessages(lease) {
    const rendered = Array.isArray(lease.prompt_html) ? lease.prompt_html : [];
    const messages = Array.isArray(lease.prompt) ? lease.prompt : [lease.prompt];
    return messages.map((message, number) => {
      const isMessage = Array.isArray(lease.prompt) && message && typeof message === "object";
      const html = rendered[number] ? rendered[number].html : null;
      return {
        role: isMessage ? String(message.role || "") : null,
        text: contentText(isMessage ? message.content : message),
        html: typeof html === "string" ? html : null,
        images: rendered[number] && Array.isArray(rendered[number].images) ? rendered[number].images : [],
      };
    });
  }

  function renderPrompt(lease) {
    el.prompt.replaceChildren(...promptMessages(lease).map((message) => {
      const text = h("div", { class: "text" });
      text.prefText = message;
      // A message's images (vision prompts): the server's URLs (their sizes are not in the lease).
      const pictures = message.images.length ? h("div", { class: "prompt-images" }, message.images.map((url, n) =>
        window.PrefImage.figure({ url }, `Prompt image ${n + 1}`, "prompt-image"))) : "";
      if (message.role === null) return pictures ? h("div", null, [text, pictures]) : text;
      return h("div", { class: `message role-${message.role.replace(/[^a-z]/gi, "")}` }, [
        h("div", { class: "role", text: message.role || "message" }), text, pictures,
      ]);
    }));
  }

  function renderResponses(responses) {
    const pictures = responses.some((r) => r.image);
    el.responses.className = `responses responses-${state.lease.kind} count-${responses.length}`
      + `${pictures ? " has-images" : ""}${pictures && el.viewActual.checked ? " actual-size" : ""}`;
    el.viewActualLabel.hidden = !pictures;
    el.responses.replaceChildren(...responses.map((r) => {
      const text = h("div", { class: "text" });
      text.prefText = { text: String(r.text), html: typeof r.html === "string" ? r.html : null };
      // An image response's text is its caption: no pane when it has none.
      text.hidden = Boolean(r.image) && !String(r.text).trim();
      return h("article", { class: "card response", "data-index": r.index, "aria-label": `Response ${r.label}` }, [
        h("h2", { class: "response-label" }, [h("span", { class: "chip", text: r.label }), ` Response ${r.label}`]),
        r.image ? window.PrefImage.figure(r.image, `Response ${r.label}`) : "",
        text,
      ]);
    }));
  }

  // --- how texts are shown: rendered Markdown, raw text, word diff -------------------------------
  /** Fill every prompt and response pane for the current view options. */
  function paintTexts() {
    const raw = el.viewRaw.checked;
    const panes = Array.from(el.responses.querySelectorAll(".response .text"));
    const canDiff = panes.length === 2 && !state.lease.responses.some((r) => r.image);
    el.viewDiffLabel.hidden = !canDiff;
    let diff = null;
    if (canDiff && el.viewDiff.checked) {
      diff = window.PrefText.wordDiff(panes[0].prefText.text, panes[1].prefText.text);
      el.diffNote.textContent = diff ? "" : "These responses differ too much for a word-by-word highlight.";
    } else {
      el.diffNote.textContent = "";
    }
    el.diffNote.hidden = !el.diffNote.textContent;
    for (const pane of el.prompt.querySelectorAll(".text")) paintOne(pane, raw);
    panes.forEach((pane, shown) => {
      if (diff) window.PrefText.showDiff(pane, shown === 0 ? diff.a : diff.b);
      else paintOne(pane, raw);
    });
  }

  function paintOne(pane, raw) {
    const { text, html } = pane.prefText;
    if (raw || html === null) window.PrefText.showText(pane, text);
    else window.PrefText.showHtml(pane, html);
  }

  function toggleView(box) {
    box.checked = !box.checked;
    viewChanged();
  }

  function viewChanged() {
    try {
      window.localStorage.setItem("prefarena.view", JSON.stringify({
        raw: el.viewRaw.checked, sync: el.viewSync.checked, diff: el.viewDiff.checked, actual: el.viewActual.checked,
      }));
    } catch (_error) { /* storage disabled: the choice lasts for this page */ }
    el.responses.classList.toggle("actual-size", el.viewActual.checked && el.responses.classList.contains("has-images"));
    if (state.lease) paintTexts();
  }

  try {
    const saved = JSON.parse(window.localStorage.getItem("prefarena.view") || "{}");
    if (typeof saved.raw === "boolean") el.viewRaw.checked = saved.raw;
    if (typeof saved.sync === "boolean") el.viewSync.checked = saved.sync;
    if (typeof saved.diff === "boolean") el.viewDiff.checked = saved.diff;
    if (typeof saved.actual === "boolean") el.viewActual.checked = saved.actual;
  } catch (_error) { /* defaults: rendered, synchronized scrolling, no diff */ }
  for (const box of [el.viewRaw, el.viewSync, el.viewDiff, el.viewActual]) box.addEventListener("change", viewChanged);
  window.PrefText.syncScroll(el.responses, ".response .text", () => el.viewSync.checked);
  window.PrefText.syncScroll(el.responses, ".response .image-pane", () => el.viewSync.checked);

  function renderEditFrom(responses) {
    el.editFrom.replaceChildren("Start from: ", ...responses.map((r) =>
      h("button", {
        type: "button", class: "small", text: r.label, "aria-label": `Copy response ${r.label} into the better answer`,
        onclick: () => {
          if (el.edited.value.trim() && el.edited.value !== r.text && !window.confirm("Replace your edited answer?")) return;
          el.edited.value = r.text;
          el.edited.focus();
        },
      })));
  }

  function renderLeaseInfo(lease) {
    const expires = new Date(lease.lease_expires_at);
    const time = expires.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    el.leaseInfo.textContent = `Item #${lease.item} · reserved for you until ${time}`;
    clearTimeout(state.expiryTimer);
    const remaining = expires.getTime() - Date.now();
    if (remaining > 0 && remaining < 2 ** 31) {
      state.expiryTimer = setTimeout(() => {
        showMessage("error", "Your reservation of this item has expired; a submission will be refused.", [], nextAction);
      }, remaining);
    }
  }

  // --- pairwise ----------------------------------------------------------------------------------
  const CHOICE_TEXT = {
    a: (s) => `A is ${s === "slight" ? "slightly" : "clearly"} better`,
    b: (s) => `B is ${s === "slight" ? "slightly" : "clearly"} better`,
    tie: () => "Tie: both are equally good",
    both_bad: () => "Both are bad",
  };

  /** Same key again (or Shift+key on a new choice) switches between slightly and clearly. */
  function pick(choice, shift) {
    const pair = state.pair;
    if (choice === "a" || choice === "b") {
      if (pair.choice === choice) pair.strength = pair.strength === "clear" ? "slight" : "clear";
      else pair.strength = shift ? "slight" : "clear";
    }
    pair.choice = choice;
    renderPair();
  }

  function renderPair() {
    const { choice, strength } = state.pair;
    const preferring = choice === "a" || choice === "b";
    for (const button of el.pairwise.querySelectorAll("[data-choice]")) {
      button.setAttribute("aria-pressed", String(button.dataset.choice === choice));
    }
    for (const button of el.pairwise.querySelectorAll("[data-strength]")) {
      button.disabled = !preferring;
      button.setAttribute("aria-pressed", String(preferring && button.dataset.strength === strength));
    }
    el.summary.textContent = choice ? CHOICE_TEXT[choice](strength)
      : "No choice yet: press 1 (A better), 2 (B better), 3 (tie) or 4 (both bad)";
    el.summary.classList.toggle("chosen", Boolean(choice));
    el.responses.querySelectorAll(".response").forEach((card, shown) => {
      const mine = (choice === "a" && shown === 0) || (choice === "b" && shown === 1);
      card.classList.toggle("chosen", mine);
      card.classList.toggle("slight", mine && strength === "slight");
      card.classList.toggle("loser", preferring && !mine);
      card.classList.toggle("tie", choice === "tie");
      card.classList.toggle("bad", choice === "both_bad");
    });
  }

  function pairwiseKey(event) {
    const code = event.code;
    const key = event.key;
    if (code === "Digit1" || code === "Numpad1" || key === "1" || key === "ArrowLeft") pick("a", event.shiftKey);
    else if (code === "Digit2" || code === "Numpad2" || key === "2" || key === "ArrowRight") pick("b", event.shiftKey);
    else if (code === "Digit3" || code === "Numpad3" || key === "3") pick("tie", false);
    else if (code === "Digit4" || code === "Numpad4" || key === "4") pick("both_bad", false);
    else return false;
    return true;
  }

  el.pairwise.addEventListener("click", (event) => {
    const choiceButton = event.target.closest("[data-choice]");
    if (choiceButton) pick(choiceButton.dataset.choice, false);
    const strengthButton = event.target.closest("[data-strength]");
    if (strengthButton && !strengthButton.disabled) {
      state.pair.strength = strengthButton.dataset.strength;
      renderPair();
    }
  });

  // --- ranking -----------------------------------------------------------------------------------
  /** Groups of shown indices, best first; a row "tied with above" joins the group above it. */
  function rankingGroups() {
    const groups = [];
    state.rank.order.forEach((index, position) => {
      if (position > 0 && state.rank.tied.has(index)) groups[groups.length - 1].push(index);
      else groups.push([index]);
    });
    return groups;
  }

  function rankMove(from, to) {
    const order = state.rank.order;
    if (to < 0 || to >= order.length || from === to) return;
    const [moved] = order.splice(from, 1);
    order.splice(to, 0, moved);
    state.rank.tied.delete(order[0]); // the top row has nothing above it to tie with
    state.rank.selected = to;
    renderRanking(true);
  }

  function rankSelect(position) {
    if (position < 0 || position >= state.rank.order.length) return;
    state.rank.selected = position;
    renderRanking(true);
  }

  function rankToggleTie(position) {
    if (position <= 0) return;
    const index = state.rank.order[position];
    if (state.rank.tied.has(index)) state.rank.tied.delete(index);
    else state.rank.tied.add(index);
    state.rank.selected = position;
    renderRanking(true);
  }

  function renderRanking(keepFocus) {
    const { order, tied, selected } = state.rank;
    const labels = new Map(state.lease.responses.map((r) => [r.index, r]));
    const rows = [];
    let place = 0;
    order.forEach((index, position) => {
      const response = labels.get(index);
      const isTied = position > 0 && tied.has(index);
      if (!isTied) place += 1;
      const row = h("li", {
        class: `rank-row${position === selected ? " selected" : ""}${isTied ? " tied" : ""}`,
        draggable: "true", "data-index": index, tabindex: position === selected ? "0" : "-1",
        "aria-current": position === selected ? "true" : null,
        "aria-label": `Place ${place}${isTied ? " (tied)" : ""}: response ${response.label}`,
      }, [
        h("span", { class: "grip", "aria-hidden": "true", text: "⋮⋮" }),
        h("span", { class: "place", text: isTied ? `=${place}` : String(place) }),
        h("span", { class: "chip", text: response.label }),
        response.image ? window.PrefImage.figure(response.image, `Response ${response.label}`, "rank-thumb") : "",
        h("span", { class: "snippet", text: snippet(response.text, 120) }),
        h("span", { class: "row-buttons" }, [
          h("button", { type: "button", class: "small", text: "↑", disabled: position === 0,
            "aria-label": `Move ${response.label} up`, onclick: () => rankMove(position, position - 1) }),
          h("button", { type: "button", class: "small", text: "↓", disabled: position === order.length - 1,
            "aria-label": `Move ${response.label} down`, onclick: () => rankMove(position, position + 1) }),
          h("label", { class: "check tie-toggle" }, [
            h("input", { type: "checkbox", checked: isTied, disabled: position === 0,
              "aria-label": `Tie ${response.label} with the row above`, onchange: () => rankToggleTie(position) }),
            " tie with above",
          ]),
        ]),
      ]);
      row.addEventListener("click", (event) => {
        if (!event.target.closest("button, input, label")) rankSelect(position);
      });
      row.addEventListener("dragstart", (event) => {
        state.dragFrom = position;
        event.dataTransfer.effectAllowed = "move";
        event.dataTransfer.setData("text/plain", String(index));
        row.classList.add("dragging");
      });
      row.addEventListener("dragover", (event) => {
        event.preventDefault();
        event.dataTransfer.dropEffect = "move";
        row.classList.add("drop-target");
      });
      row.addEventListener("dragleave", () => row.classList.remove("drop-target"));
      row.addEventListener("drop", (event) => {
        event.preventDefault();
        if (state.dragFrom !== null) rankMove(state.dragFrom, position);
        state.dragFrom = null;
      });
      row.addEventListener("dragend", () => {
        state.dragFrom = null;
        renderRanking(false);
      });
      rows.push(row);
    });
    el.rankingList.replaceChildren(...rows);
    el.rankingList.classList.toggle("disabled", el.cannotRank.checked);
    if (keepFocus && rows[selected]) rows[selected].focus({ preventScroll: false });
  }

  function rankingKey(event) {
    const key = event.key;
    const selected = state.rank.selected;
    if (key === "ArrowUp" || key === "k" || key === "K") {
      if (event.shiftKey) rankMove(selected, selected - 1);
      else rankSelect(selected - 1);
    } else if (key === "ArrowDown" || key === "j" || key === "J") {
      if (event.shiftKey) rankMove(selected, selected + 1);
      else rankSelect(selected + 1);
    } else if (key === "t" || key === "T") {
      rankToggleTie(selected);
    } else if (key === "c" || key === "C") {
      el.cannotRank.checked = !el.cannotRank.checked;
      renderRanking(false);
    } else {
      return false;
    }
    return true;
  }

  el.cannotRank.addEventListener("change", () => renderRanking(false));

  // --- rating ------------------------------------------------------------------------------------
  function renderRating(responses) {
    const fieldsets = cfg.aspects.map((aspect, aspectNo) => {
      const rubric = aspect.rubric || {};
      const scores = [];
      for (let score = aspect.min; score <= aspect.max; score += 1) scores.push(score);
      const rubricList = Object.keys(rubric).length
        ? h("ul", { class: "rubric" }, Object.entries(rubric)
          .sort((x, y) => Number(x[0]) - Number(y[0]))
          .map(([score, text]) => h("li", null, [h("b", { text: score }), ` ${text}`])))
        : "";
      const head = h("tr", null, [h("th", { scope: "col", text: "" }), ...scores.map((score) =>
        h("th", { scope: "col", title: rubric[String(score)] || "" }, [
          String(score), rubric[String(score)] ? h("small", { text: rubric[String(score)] }) : "",
        ]))]);
      const body = responses.map((r) => h("tr", { "data-aspect": aspect.name, "data-index": r.index }, [
        h("th", { scope: "row" }, [h("span", { class: "chip", text: r.label }), ` Response ${r.label}`]),
        ...scores.map((score) => {
          const meaning = rubric[String(score)];
          return h("td", null, [h("label", { class: "score", title: meaning || `${score}` }, [
            h("input", {
              type: "radio", name: `rating-${aspectNo}-${r.index}`, value: score,
              "aria-label": `${aspect.name}, response ${r.label}: ${score}${meaning ? ` (${meaning})` : ""}`,
            }),
            h("span", { text: String(score) }),
          ])]);
        }),
      ]));
      return h("fieldset", { class: "aspect" }, [
        h("legend", null, [h("span", { class: "aspect-name", text: aspect.name }),
          aspect.description ? h("span", { class: "muted", text: ` · ${aspect.description}` }) : ""]),
        rubricList,
        h("table", { class: "rating-table" }, [h("thead", null, [head]), h("tbody", null, body)]),
      ]);
    });
    el.ratingForm.replaceChildren(...fieldsets);
  }

  el.ratingForm.addEventListener("change", (event) => {
    const row = event.target.closest("tr");
    if (row) row.classList.remove("missing");
  });

  // --- submitting --------------------------------------------------------------------------------
  /** The kind-specific part of the payload, or {error, lines} when the answer is incomplete. */
  function collectAnswer() {
    const lease = state.lease;
    if (lease.kind === "pairwise") {
      const { choice, strength } = state.pair;
      if (!choice) return { error: "Choose first: press 1 (A better), 2 (B better), 3 (tie) or 4 (both bad)." };
      return { payload: choice === "a" || choice === "b" ? { choice, strength } : { choice } };
    }
    if (lease.kind === "ranking") {
      return { payload: el.cannotRank.checked ? { cannot_rank: true } : { ranking: rankingGroups() } };
    }
    const ratings = {};
    const missing = [];
    cfg.aspects.forEach((aspect, aspectNo) => {
      ratings[aspect.name] = lease.responses.map((r) => {
        const checked = el.ratingForm.querySelector(`input[name="rating-${aspectNo}-${r.index}"]:checked`);
        if (!checked) {
          missing.push(`${aspect.name} for response ${r.label}`);
          el.ratingForm.querySelector(`input[name="rating-${aspectNo}-${r.index}"]`).closest("tr").classList.add("missing");
          return null;
        }
        return Number(checked.value);
      });
    });
    if (missing.length) return { error: "Rate every response on every aspect.", lines: [`Missing: ${missing.join(", ")}`] };
    return { payload: { ratings } };
  }

  function setBusy(busy) {
    state.busy = busy;
    el.submit.disabled = busy;
    el.skip.disabled = busy;
    el.work.setAttribute("aria-busy", String(busy));
  }

  async function submit() {
    if (!state.lease || state.busy) return;
    const answer = collectAnswer();
    if (answer.error) {
      showMessage("error", answer.error, answer.lines);
      return;
    }
    const payload = answer.payload;
    const rationale = el.rationale.value.trim();
    if (rationale) payload.rationale = rationale;
    if (el.edited.value.trim()) payload.edited_answer = el.edited.value;
    payload.time_spent_ms = Math.min(Math.round(performance.now() - state.startedAt), MAX_TIME_MS);
    payload.idempotency_key = state.key;
    clearMessage();
    setBusy(true);
    let result;
    try {
      result = await post(`items/${state.lease.item}/judgments/`, payload);
    } catch (_error) {
      showMessage("error", "Could not reach the server; your answer is kept. Submit again to retry.");
      return;
    } finally {
      setBusy(false);
    }
    if (result.status === 201 || result.status === 200) {
      // 200 is a replay of the same key: stored by an earlier attempt whose answer we never saw.
      state.mine += 1;
      if (cfg.overlap === 1) state.itemsDone = Math.min(state.itemsDone + 1, state.itemsTotal);
      renderProgress();
      showMessage("ok", `Saved (judgment #${result.data.id}).`);
      await loadNext();
      return;
    }
    // On any refusal the inputs stay as they are: nothing the annotator entered is cleared.
    reportFailure(result, "your judgment");
  }

  // --- skipping ----------------------------------------------------------------------------------
  function openSkip() {
    if (!state.lease || state.busy || el.skipDialog.open) return;
    el.skipError.hidden = true;
    el.skipReason.value = "";
    el.skipDialog.showModal();
    el.skipReason.focus();
  }

  function skipError(text) {
    el.skipError.textContent = text;
    el.skipError.hidden = false;
  }

  el.skipForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reason = el.skipReason.value.trim();
    if (!reason) {
      skipError("Please give a reason.");
      el.skipReason.focus();
      return;
    }
    let result;
    try {
      result = await post(`items/${state.lease.item}/skip/`, { reason });
    } catch (_error) {
      skipError("Could not reach the server. Try again.");
      return;
    }
    if (result.status === 204) {
      el.skipDialog.close();
      showMessage("info", "Skipped. You will not be offered that item again.");
      await loadNext();
      return;
    }
    if (result.status === 400) {
      skipError([result.data && result.data.detail, ...fieldLines(result.data)].filter(Boolean).join(" "));
      return;
    }
    el.skipDialog.close();
    reportFailure(result, "Skipping");
  });

  el.skipForm.addEventListener("click", (event) => {
    const quick = event.target.closest("[data-reason]");
    if (quick) {
      el.skipReason.value = quick.dataset.reason;
      el.skipReason.focus();
    }
  });
  el.skipCancel.addEventListener("click", () => el.skipDialog.close());
  el.skip.addEventListener("click", openSkip);
  el.submit.addEventListener("click", submit);
  el.checkAgain.addEventListener("click", () => loadNext());

  // --- help overlay ------------------------------------------------------------------------------
  for (const table of el.help.querySelectorAll("table[data-kind]")) table.hidden = table.dataset.kind !== cfg.kind;

  function toggleHelp(show) {
    const open = show === undefined ? el.help.hidden : show;
    if (open === !el.help.hidden) return;
    el.help.hidden = !open;
    el.helpButton.setAttribute("aria-expanded", String(open));
    if (open) {
      state.helpReturnFocus = document.activeElement;
      el.helpClose.focus();
    } else if (state.helpReturnFocus && state.helpReturnFocus.focus) {
      state.helpReturnFocus.focus();
    }
  }

  el.helpButton.addEventListener("click", () => toggleHelp());
  el.helpClose.addEventListener("click", () => toggleHelp(false));
  el.help.addEventListener("click", (event) => { if (event.target === el.help) toggleHelp(false); });

  // --- keyboard ----------------------------------------------------------------------------------
  function isTyping(target) {
    if (!(target instanceof Element)) return false;
    if (target.isContentEditable) return true;
    if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    if (target.tagName === "INPUT") return !["radio", "checkbox", "button", "submit", "reset", "range"].includes(target.type);
    return false;
  }

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing || el.skipDialog.open || window.PrefImage.isZoomOpen()) return;
    // Ctrl+Enter (Cmd+Enter) submits from anywhere, text boxes included.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && state.lease && el.help.hidden) {
      event.preventDefault();
      submit();
      return;
    }
    if (isTyping(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "?") {
      event.preventDefault();
      toggleHelp();
      return;
    }
    if (!el.help.hidden) {
      if (event.key === "Escape") {
        event.preventDefault();
        toggleHelp(false);
      }
      return;
    }
    if (!state.lease) return;
    if (event.key === "Enter") {
      // Links, disclosure summaries and the skip/help buttons keep their own Enter behaviour.
      if (event.target.closest("a, summary, #skip, #help-button, #edit-from, .msg")) return;
      event.preventDefault();
      submit();
      return;
    }
    if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      openSkip();
      return;
    }
    if (event.key === "r" || event.key === "R") {
      event.preventDefault();
      toggleView(el.viewRaw);
      return;
    }
    if ((event.key === "d" || event.key === "D") && !el.viewDiffLabel.hidden) {
      event.preventDefault();
      toggleView(el.viewDiff);
      return;
    }
    if ((event.key === "z" || event.key === "Z") && !el.viewActualLabel.hidden) {
      event.preventDefault();
      toggleView(el.viewActual);
      return;
    }
    const handled = state.lease.kind === "pairwise" ? pairwiseKey(event)
      : state.lease.kind === "ranking" ? rankingKey(event) : false;
    if (handled) event.preventDefault();
  });

  // --- guidelines pane: remember open/closed per campaign --------------------------------------
  const guidelinesKey = `prefarena.guidelines.${cfg.campaign}`;
  try {
    if (window.localStorage.getItem(guidelinesKey) === "closed") el.guidelines.open = false;
    el.guidelines.addEventListener("toggle", () => {
      window.localStorage.setItem(guidelinesKey, el.guidelines.open ? "open" : "closed");
    });
  } catch (_error) { /* storage disabled: the pane simply starts open */ }

  el.work.tabIndex = -1;
  renderProgress();
  loadNext();
})();
