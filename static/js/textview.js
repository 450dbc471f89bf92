/* PrefArena: how prompts and responses are shown, shared by the annotate and arena pages (window.PrefText).
 *
 * Security: HTML reaches the page only from the server's sanitiser (prefarena/rendering.py: Markdown with raw
 * HTML escaped, Pygments highlighting, nh3 allow-list), through `showHtml`. Everything this file builds from
 * text (raw view, word diff, the streamed tail) is text nodes, never parsed as HTML.
 */
(function () {
  "use strict";

  /** Put server-sanitised HTML into `node` (the rendered view). */
  function showHtml(node, html) {
    const template = document.createElement("template");
    template.innerHTML = html; // sanitised by prefarena.rendering; <template> content is inert while parsed
    node.replaceChildren(template.content);
    node.classList.add("rendered", "markdown");
    node.classList.remove("raw");
  }

  /** Show `text` exactly as it is (the raw view). */
  function showText(node, text) {
    node.textContent = text;
    node.classList.add("raw");
    node.classList.remove("rendered", "markdown");
  }

  /** The rendered HTML of a text's first characters, then the rest as plain text (a streamed answer whose
   * HTML lags a little behind its text). */
  function showHtmlThenText(node, html, tail) {
    showHtml(node, html);
    if (tail) node.append(Object.assign(document.createElement("span"), { className: "stream-tail", textContent: tail }));
  }

  // --- word diff ---------------------------------------------------------------------------------
  function tokens(text) {
    return String(text).match(/\s+|[\p{L}\p{N}_]+|[^\s\p{L}\p{N}_]/gu) || [];
  }

  /** Myers' O(ND) diff of two token lists (E. Myers, "An O(ND) Difference Algorithm", 1986). Returns
   * [op, token] with op "=", "-" (only in a) or "+" (only in b), or null beyond `maxEdits` edits. */
  function myers(a, b, maxEdits) {
    const n = a.length;
    const m = b.length;
    const offset = n + m + 1;
    const v = new Int32Array(2 * offset + 1);
    const trace = [];
    let found = -1;
    for (let d = 0; d <= Math.min(maxEdits, n + m) && found < 0; d += 1) {
      trace.push(v.slice(offset - d - 1, offset + d + 2)); // values after step d-1 for k in [-d-1, d+1]
      for (let k = -d; k <= d; k += 2) {
        let x = k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1]) ? v[offset + k + 1] : v[offset + k - 1] + 1;
        let y = x - k;
        while (x < n && y < m && a[x] === b[y]) { x += 1; y += 1; }
        v[offset + k] = x;
        if (x >= n && y >= m) { found = d; break; }
      }
    }
    if (found < 0) return null;
    const ops = [];
    let x = n;
    let y = m;
    for (let d = found; d > 0; d -= 1) {
      const before = trace[d];
      const at = (k) => before[k + d + 1];
      const k = x - y;
      const prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
      const prevX = at(prevK);
      const prevY = prevX - prevK;
      while (x > prevX && y > prevY) { x -= 1; y -= 1; ops.push(["=", a[x]]); }
      if (x === prevX) { y -= 1; ops.push(["+", b[y]]); } else { x -= 1; ops.push(["-", a[x]]); }
    }
    while (x > 0) { x -= 1; ops.push(["=", a[x]]); }
    return ops.reverse();
  }

  /** Word-level differences of two texts: {a: [[text, changed]], b: [[text, changed]]}, or null when they
   * differ in more than `maxEdits` tokens (the highlight is for near-identical pairs). */
  function wordDiff(textA, textB, maxEdits) {
    const ops = myers(tokens(textA), tokens(textB), maxEdits === undefined ? 400 : maxEdits);
    if (ops === null) return null;
    const sides = { a: [], b: [] };
    const push = (side, token, changed) => {
      const parts = sides[side];
      const last = parts[parts.length - 1];
      // Whitespace between two changed words stays inside one highlight.
      if (last && (last[1] === changed || (/^\s+$/.test(token) && last[1]))) last[0] += token;
      else parts.push([token, changed]);
    };
    for (const [op, token] of ops) {
      if (op !== "+") push("a", token, op === "-");
      if (op !== "-") push("b", token, op === "+");
    }
    return sides;
  }

  /** Show one side of a word diff: changed runs in <mark class="diff">, everything as text nodes. */
  function showDiff(node, parts) {
    node.replaceChildren(...parts.flatMap(([text, changed]) => {
      if (!changed || /^\s+$/.test(text)) return [document.createTextNode(text)];
      const [, core, trailing] = text.match(/^([\s\S]*?)(\s*)$/);
      const mark = Object.assign(document.createElement("mark"), { className: "diff", textContent: core });
      return trailing ? [mark, document.createTextNode(trailing)] : [mark];
    }));
    node.classList.add("raw");
    node.classList.remove("rendered", "markdown");
  }

  // --- synchronized scrolling --------------------------------------------------------------------
  /** Keep the panes `panes()` returns at the same relative scroll position while `enabled()`. */
  function syncScroll(container, paneSelector, enabled) {
    let driver = null;
    let frame = 0;
    container.addEventListener("scroll", (event) => {
      const pane = event.target;
      if (!(pane instanceof Element) || !pane.matches(paneSelector) || !enabled()) return;
      if (driver && driver !== pane) return; // a scroll we caused
      driver = pane;
      const range = pane.scrollHeight - pane.clientHeight;
      const ratio = range > 0 ? pane.scrollTop / range : 0;
      for (const other of container.querySelectorAll(paneSelector)) {
        if (other === pane) continue;
        const target = ratio * (other.scrollHeight - other.clientHeight);
        if (Math.abs(other.scrollTop - target) >= 1) other.scrollTop = target;
      }
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => { frame = requestAnimationFrame(() => { driver = null; }); });
    }, true); // scroll does not bubble: listen in the capture phase
  }

  window.PrefText = { showHtml, showText, showHtmlThenText, wordDiff, showDiff, syncScroll };
})();
