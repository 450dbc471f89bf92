// Arena page: start a battle, watch both answers arrive, vote, see who was who.
// - POST /api/v1/arena/battles/ starts a battle (live on the typed prompt, or drawn from the pool);
// - live answers stream over the battle's websocket as {"type": "battle.text", side, text, done}, then
//   {"type": "battle.status", status, a, b}; while a battle is generating the page also polls the battle
//   every 3 s (the socket may be closed, or the embedded demo's in-memory layer cannot hear the worker);
// - the vote buttons open once both answers are complete; the vote's answer names the two models.
//   A streamed `battle.text` carries, now and then, `html` (the server's sanitised rendering of the text's first
//   `html_chars` characters); the page shows that HTML followed by the rest of the text as plain text.
// Model output is untrusted: HTML comes only from the server's sanitiser (prefarena/rendering.py) through
// PrefText.showHtml (static/js/textview.js); every text (raw view, diff, streamed tail) goes in as text nodes.
(function () {
  "use strict";

  const configElement = document.getElementById("arena-config");
  if (!configElement) {
    return;
  }
  const config = JSON.parse(configElement.textContent);
  const POLL_MS = 3000;
  const WINNER_WORDS = { a: "A is better", b: "B is better", tie: "Tie", both_bad: "Both are bad" };
  const REASON_WORDS = {
    identity_leak: "an answer named a model or its maker",
    response_error: "an answer failed to generate",
    rate_limited: "too many votes",
    daily_cap: "daily limit reached",
    outlier_voter: "flagged voter",
    manual: "excluded by staff",
  };

  const form = document.getElementById("prompt-form");
  const input = document.getElementById("prompt-input");
  const drawButton = document.getElementById("draw-button");
  const sendButton = document.getElementById("send-button");
  const battleSection = document.getElementById("battle");
  const promptBox = document.querySelector("#battle-prompt .text");
  const message = document.getElementById("message");
  const result = document.getElementById("result");
  const newRound = document.getElementById("new-round");
  const voteButtons = Array.from(document.querySelectorAll("[data-winner]"));
  const sides = {
    a: document.getElementById("side-a"),
    b: document.getElementById("side-b"),
  };
  const view = {
    raw: document.getElementById("view-raw"),
    sync: document.getElementById("view-sync"),
    diff: document.getElementById("view-diff"),
    diffNote: document.getElementById("diff-note"),
  };
  // What each side shows: its text so far, and the sanitised HTML of its first htmlChars characters.
  let shown = { a: null, b: null };
  let prompt = []; // [{role, text, html}]

  let battle = null; // {id, token, status}
  let socket = null;
  let pollTimer = null;
  let complete = { a: false, b: false };
  let voting = false;
  const imageArena = config.kind === "image";

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function say(text, kind) {
    if (!text) {
      message.hidden = true;
      message.textContent = "";
      return;
    }
    message.className = "msg msg-" + (kind || "info");
    message.textContent = text;
    message.hidden = false;
  }

  function errorText(body, status) {
    if (body && typeof body === "object") {
      if (typeof body.detail === "string") {
        return body.detail;
      }
      const first = Object.keys(body).map((key) => [key, body[key]])[0];
      if (first) {
        const value = Array.isArray(first[1]) ? first[1].join(" ") : String(first[1]);
        return first[0] + ": " + value;
      }
    }
    return "The request failed (HTTP " + status + ").";
  }

  async function api(method, url, body) {
    const options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRFToken"] = csrfToken();
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    try {
      data = await response.json();
    } catch (ignored) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function battleUrl(suffix) {
    return config.battles_url + battle.id + "/" + (suffix || "");
  }

  // --- rendering ---------------------------------------------------------------------------------------
  function emptySide() {
    return { text: "", html: null, htmlChars: 0, image: null };
  }

  /** A side's new text; `html` (with `htmlChars`, the length of text it renders) when the server sent one. */
  function setSide(side, text, done, html, htmlChars) {
    const card = sides[side];
    const current = shown[side] || emptySide();
    if (text !== null && text !== undefined) {
      current.text = String(text);
      if (typeof html === "string") {
        current.html = html;
        current.htmlChars = typeof htmlChars === "number" ? htmlChars : current.text.length;
      } else if (current.htmlChars > current.text.length) {
        current.html = null; // a shorter text than the one rendered: not a continuation
        current.htmlChars = 0;
      }
      shown[side] = current;
    }
    if (done) {
      complete[side] = true;
    }
    const written = current.text;
    let status = written ? "writing…" : "waiting…";
    if (complete[side]) {
      status = written ? "complete" : "complete (empty answer)";
    }
    card.querySelector("[data-side-status]").textContent = status;
    paintSides();
    updateVoteButtons();
  }

  function paintSides() {
    const both = shown.a !== null && shown.b !== null && complete.a && complete.b;
    let diff = null;
    if (view.diff.checked && both) {
      diff = window.PrefText.wordDiff(shown.a.text, shown.b.text);
    }
    view.diffNote.textContent = !view.diff.checked ? ""
      : !both ? "The differences are highlighted once both answers are complete."
        : diff ? "" : "These answers differ too much for a word-by-word highlight.";
    view.diffNote.hidden = !view.diffNote.textContent;
    ["a", "b"].forEach((side) => {
      const node = sides[side].querySelector("[data-text]");
      const current = shown[side] || emptySide();
      if (current.image) {
        // an image battle: the side's picture (the server's /images/<sha256> URL), fitted; a click enlarges it
        node.replaceChildren(window.PrefImage.figure(current.image, "Model " + side.toUpperCase() + "'s image"));
      } else if (diff) {
        window.PrefText.showDiff(node, diff[side]);
      } else if (view.raw.checked || current.html === null) {
        window.PrefText.showText(node, current.text);
      } else {
        window.PrefText.showHtmlThenText(node, current.html, current.text.slice(current.htmlChars));
      }
    });
    paintPrompt();
  }

  function paintPrompt() {
    promptBox.replaceChildren(...prompt.map((message) => {
      const text = document.createElement("div");
      text.className = "text";
      if (view.raw.checked || message.html === null) {
        window.PrefText.showText(text, message.text);
      } else {
        window.PrefText.showHtml(text, message.html);
      }
      if (message.role === null) {
        return text;
      }
      const line = document.createElement("div");
      line.className = "message";
      const role = document.createElement("div");
      role.className = "role";
      role.textContent = message.role;
      line.append(role, text);
      return line;
    }));
  }

  function updateVoteButtons() {
    const open = battle !== null && battle.status !== "voted" && complete.a && complete.b && !voting;
    voteButtons.forEach((button) => {
      button.disabled = !open;
    });
  }

  function showPrompt(content, rendered) {
    const htmls = Array.isArray(rendered) ? rendered : [];
    const messages = Array.isArray(content) ? content : [content];
    prompt = messages.map((item, number) => {
      const isMessage = Array.isArray(content) && item && typeof item === "object";
      const html = htmls[number] ? htmls[number].html : null;
      return {
        role: isMessage ? String(item.role || "") : null,
        text: isMessage ? String(item.content || "") : String(item == null ? "" : item),
        html: typeof html === "string" ? html : null,
      };
    });
    paintPrompt();
  }

  function reset() {
    stopLive();
    battle = null;
    complete = { a: false, b: false };
    voting = false;
    shown = { a: null, b: null };
    prompt = [];
    promptBox.replaceChildren();
    Object.values(sides).forEach((card) => {
      card.querySelector("[data-text]").textContent = "";
      card.querySelector("[data-side-status]").textContent = imageArena ? "drawing…" : "waiting…";
      const name = card.querySelector("[data-model-name]");
      name.textContent = "";
      name.hidden = true;
    });
    result.hidden = true;
    result.textContent = "";
    newRound.hidden = true;
    battleSection.hidden = true;
    updateVoteButtons();
  }

  /** `html`: {a, b}, the sides' final texts rendered (null where a side has no text); `images`: {a, b}, each
   * side's image ({url, width, height}) in an image battle. */
  function applyStatus(status, a, b, html, images) {
    if (!battle) {
      return;
    }
    const rendered = html || {};
    const final = (text, side) => (typeof rendered[side] === "string" && text !== null && text !== undefined ? rendered[side] : null);
    if (status === "ready" || status === "voted") {
      setSide("a", a, true, final(a, "a"));
      setSide("b", b, true, final(b, "b"));
      if (images && (images.a || images.b)) {
        ["a", "b"].forEach((side) => {
          shown[side] = shown[side] || emptySide();
          shown[side].image = images[side] || null;
          sides[side].querySelector("[data-side-status]").textContent = images[side] ? "complete" : "no image";
        });
        paintSides();
      }
    } else if (status === "error") {
      complete = { a: true, b: true };
      setSide("a", a, true, final(a, "a"));
      setSide("b", b, true, final(b, "b"));
      say("Generation failed for at least one model. You may still vote, but the vote will not count.", "warning");
    }
    if (status !== "generating") {
      battle.status = status === "error" ? "error" : battle.status === "voted" ? "voted" : "ready";
      stopLive();
    }
    updateVoteButtons();
  }

  function show(payload) {
    reset();
    battle = { id: payload.id, token: payload.token, status: payload.status };
    battleSection.hidden = false;
    showPrompt(payload.prompt, payload.prompt_html);
    if (payload.status === "generating") {
      openSocket(payload.websocket);
      pollTimer = window.setInterval(poll, POLL_MS);
    } else {
      applyStatus(payload.status, payload.responses.a, payload.responses.b, payload.responses_html, payload.images);
    }
  }

  // --- live updates ----------------------------------------------------------------------------------
  function openSocket(path) {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const current = battle;
    socket = new WebSocket(scheme + window.location.host + path);
    socket.addEventListener("message", (event) => {
      if (battle !== current) {
        return;
      }
      let data = null;
      try {
        data = JSON.parse(event.data);
      } catch (ignored) {
        return;
      }
      if (data.type === "battle.text" && (data.side === "a" || data.side === "b") && !complete[data.side]) {
        setSide(data.side, String(data.text || ""), Boolean(data.done), data.html, data.html_chars);
      } else if (data.type === "battle.status" && data.status !== "generating") {
        applyStatus(data.status, data.a, data.b, data.html, data.images);
      }
    });
  }

  function stopLive() {
    if (socket) {
      socket.close();
      socket = null;
    }
    if (pollTimer) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  async function poll() {
    if (!battle || battle.status !== "generating") {
      return;
    }
    const current = battle;
    try {
      const answer = await api("GET", battleUrl());
      if (answer.ok && battle === current && answer.data.status !== "generating") {
        const data = answer.data;
        applyStatus(data.status, data.responses.a, data.responses.b, data.responses_html, data.images);
      }
    } catch (ignored) {
      // the next poll retries
    }
  }

  // --- actions -----------------------------------------------------------------------------------------
  async function start(body) {
    say("");
    sendButton.disabled = true;
    drawButton.disabled = true;
    try {
      const answer = await api("POST", config.battles_url, body);
      if (answer.status === 201) {
        show(answer.data);
      } else {
        say(errorText(answer.data, answer.status), "error");
      }
    } catch (error) {
      say("Could not reach the server: " + error, "error");
    } finally {
      sendButton.disabled = false;
      drawButton.disabled = false;
    }
  }

  async function vote(winner) {
    if (!battle || voting) {
      return;
    }
    voting = true;
    updateVoteButtons();
    const current = battle;
    try {
      const answer = await api("POST", battleUrl("vote/"), { winner: winner, token: battle.token });
      if (battle !== current) {
        return;
      }
      if (answer.status === 201) {
        battle.status = "voted";
        reveal(answer.data);
      } else {
        say(errorText(answer.data, answer.status), "error");
        if (answer.status === 409) {
          battle.status = "voted"; // voted already (another tab): nothing left to do here
          newRound.hidden = false;
        }
      }
    } catch (error) {
      say("Could not reach the server: " + error, "error");
    } finally {
      voting = false;
      updateVoteButtons();
    }
  }

  function reveal(data) {
    [
      ["a", data.model_a],
      ["b", data.model_b],
    ].forEach(([side, name]) => {
      const element = sides[side].querySelector("[data-model-name]");
      element.textContent = String(name);
      element.hidden = false;
    });
    let text = "You voted “" + (WINNER_WORDS[data.winner] || data.winner) + "”. Model A: " + data.model_a;
    text += " · Model B: " + data.model_b + ".";
    if (!data.counted) {
      text += " This vote does not count (" + (REASON_WORDS[data.exclusion_reason] || data.exclusion_reason) + ").";
    }
    result.textContent = text;
    result.hidden = false;
    newRound.hidden = false;
    newRound.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = input.value.trim();
    if (!prompt) {
      say("Type a prompt first.", "warning");
      input.focus();
      return;
    }
    start({ mode: "live", kind: config.kind || "text", prompt: prompt });
  });
  const poolSelect = document.getElementById("pool-select");
  (config.campaigns || []).forEach((campaign) => {
    const option = document.createElement("option");
    option.value = String(campaign.id);
    option.textContent = campaign.name; // untrusted text: never innerHTML
    poolSelect.appendChild(option);
  });
  drawButton.addEventListener("click", () => {
    const body = { mode: "pregenerated", kind: config.kind || "text" };
    if (poolSelect.value) {
      body.campaign = Number(poolSelect.value);
    }
    start(body);
  });
  voteButtons.forEach((button) => button.addEventListener("click", () => vote(button.dataset.winner)));
  // Keys 1–4 vote (A, B, tie, both bad) once both sides are complete; never while typing in a field.
  const KEY_WINNERS = { 1: "a", 2: "b", 3: "tie", 4: "both_bad" };
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey || (window.PrefImage && window.PrefImage.isZoomOpen())) {
      return;
    }
    if (target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]")) {
      return;
    }
    const winner = KEY_WINNERS[event.key];
    const button = winner && voteButtons.find((b) => b.dataset.winner === winner);
    if (button && !button.disabled) {
      event.preventDefault();
      vote(winner);
    }
  });
  [view.raw, view.diff].forEach((box) => box.addEventListener("change", paintSides));
  window.PrefText.syncScroll(battleSection, ".response [data-text]", () => view.sync.checked);
  newRound.addEventListener("click", () => {
    reset();
    say("");
    input.value = "";
    input.focus();
  });
  reset();
})();
