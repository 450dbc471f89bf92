// The review page's keyboard (annotations/review_views.py renders the form; this only moves the focus and
// ticks radio buttons). 1 / 2 / 3 / 4: A better, B better, tie, both bad (Shift+1 / Shift+2: slightly);
// N: type the note; R: give the claim back (another reviewer gets the item); Ctrl+Enter (or Cmd+Enter): save,
// also while typing. Keys are off in text boxes.
// On the queue page the "Review the next item" button takes the focus, so Enter claims one.
(function () {
  "use strict";
  // The queue page: Enter asks for the next item.
  const next = document.getElementById("review-next");
  if (next) next.focus();
  const form = document.getElementById("adjudication-form");
  if (!form) return;
  const note = form.querySelector("textarea[name=note]");
  const release = document.getElementById("release-form");
  const choices = { "1": "a", "2": "b", "3": "tie", "4": "both_bad" };
  // Shift+1 arrives as "!" and Shift+2 as "@" on US layouts: read the physical key instead.
  const digitOf = (event) => (/^Digit[1-4]$/.test(event.code) ? event.code.slice(5) : event.key);

  function tick(name, value) {
    const radio = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (radio) {
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  function typing(target) {
    return target instanceof HTMLTextAreaElement ||
      (target instanceof HTMLInputElement && !["radio", "checkbox"].includes(target.type));
  }

  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (typing(event.target) || event.altKey || event.ctrlKey || event.metaKey) return;
    const digit = digitOf(event);
    if (choices[digit] && form.querySelector("input[name=choice]")) {
      event.preventDefault();
      tick("choice", choices[digit]);
      if (digit === "1" || digit === "2") tick("strength", event.shiftKey ? "slight" : "clear");
      return;
    }
    if ((event.key === "n" || event.key === "N") && note) {
      event.preventDefault();
      note.focus();
      return;
    }
    if ((event.key === "r" || event.key === "R") && release) {
      event.preventDefault();
      release.requestSubmit();
    }
  });
})();
