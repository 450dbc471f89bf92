// Arena page: start a battle, watch both answers arrive, vote, see who was who.
// - POST /api/v1/arena/battles/ starts a battle (live on the typed prompt, or drawn from the pool);
// - live answers stream over the battle's websocket as {"type": "battle.text", side, text, done}, then
//   {"type": "battle.status", status, a, b}; while a battle is generating the page also polls the battle
//   every 3 s (the socket may be closed, or the embedded demo's in-memory layer cannot hear the worker);
// - the vote buttons open once both answers are complete; the vote's answer names the two models.
// Model output is untrusted: every text goes in with textContent, never innerHTML.
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

  let battle = null; // {id, token, status}
  let socket = null;
  let pollTimer = null;
  let complete = { a: false, b: false };
  let voting = false;

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
  function setSide(side, text, done) {
    const card = sides[side];
    if (text !== null && text !== undefined) {
      card.querySelector("[data-text]").textContent = text;
    }
    if (done) {
      complete[side] = true;
    }
    const shown = card.querySelector("[data-text]").textContent;
    let status = shown ? "writing…" : "waiting…";
    if (complete[side]) {
      status = shown ? "complete" : "complete (empty answer)";
    }
    card.querySelector("[data-side-status]").textContent = status;
    updateVoteButtons();
  }

  function updateVoteButtons() {
    const open = battle !== null && battle.status !== "voted" && complete.a && complete.b && !voting;
    voteButtons.forEach((button) => {
      button.disabled = !open;
    });
  }

  function showPrompt(content) {
    promptBox.textContent = "";
    if (typeof content === "string") {
      promptBox.textContent = content;
      return;
    }
    (content || []).forEach((item) => {
      const line = document.createElement("div");
      line.className = "message";
      const role = document.createElement("div");
      role.className = "role";
      role.textContent = String(item.role || "");
      const text = document.createElement("div");
      text.textContent = String(item.content || "");
      line.append(role, text);
      promptBox.append(line);
    });
  }

  function reset() {
    stopLive();
    battle = null;
    complete = { a: false, b: false };
    voting = false;
    Object.values(sides).forEach((card) => {
      card.querySelector("[data-text]").textContent = "";
      card.querySelector("[data-side-status]").textContent = "waiting…";
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

  function applyStatus(status, a, b) {
    if (!battle) {
      return;
    }
    if (status === "ready" || status === "voted") {
      setSide("a", a, true);
      setSide("b", b, true);
    } else if (status === "error") {
      complete = { a: true, b: true };
      setSide("a", a, true);
      setSide("b", b, true);
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
    showPrompt(payload.prompt);
    if (payload.status === "generating") {
      openSocket(payload.websocket);
      pollTimer = window.setInterval(poll, POLL_MS);
    } else {
      applyStatus(payload.status, payload.responses.a, payload.responses.b);
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
        setSide(data.side, String(data.text || ""), Boolean(data.done));
      } else if (data.type === "battle.status" && data.status !== "generating") {
        applyStatus(data.status, data.a, data.b);
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
        applyStatus(answer.data.status, answer.data.responses.a, answer.data.responses.b);
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
    start({ mode: "live", prompt: prompt });
  });
  const poolSelect = document.getElementById("pool-select");
  (config.campaigns || []).forEach((campaign) => {
    const option = document.createElement("option");
    option.value = String(campaign.id);
    option.textContent = campaign.name; // untrusted text: never innerHTML
    poolSelect.appendChild(option);
  });
  drawButton.addEventListener("click", () => {
    const body = { mode: "pregenerated" };
    if (poolSelect.value) {
      body.campaign = Number(poolSelect.value);
    }
    start(body);
  });
  voteButtons.forEach((button) => button.addEventListener("click", () => vote(button.dataset.winner)));
  newRound.addEventListener("click", () => {
    reset();
    say("");
    input.value = "";
    input.focus();
  });
  reset();
})();
