// Loop page: redraws each policy's pipeline from loop.json. Polled every 2 s while a round is under way
// (a snapshot or run queued or running), else every 10 s, so a round that beat fires appears by itself.
// Server values are written with textContent only; links are this site's paths.
(function () {
  "use strict";

  const root = document.getElementById("loop");
  if (!root) {
    return;
  }
  const pollUrl = root.dataset.pollUrl;

  function headline(stage) {
    const element = document.createElement(stage.url && stage.url.charAt(0) === "/" ? "a" : "span");
    if (element.tagName === "A") {
      element.href = stage.url;
    }
    element.className = "stage-headline";
    element.dataset.field = "headline";
    element.textContent = stage.headline;
    return element;
  }

  function drawStage(item, stage) {
    item.className = "stage stage-" + stage.state;
    item.dataset.state = stage.state;
    const title = document.createElement("span");
    title.className = "stage-title";
    title.textContent = stage.title;
    const detail = document.createElement("span");
    detail.className = "stage-detail";
    detail.dataset.field = "detail";
    detail.textContent = stage.detail;
    item.replaceChildren(title, headline(stage), detail);
  }

  function render(data) {
    let live = false;
    data.policies.forEach(function (policy) {
      live = live || policy.live;
      const list = root.querySelector('.pipeline[data-policy="' + policy.policy + '"]');
      if (!list) {
        return; // a policy created after the page loaded: shown on the next page load
      }
      policy.stages.forEach(function (stage) {
        const item = list.querySelector('[data-stage="' + stage.key + '"]');
        if (item) {
          drawStage(item, stage);
        }
      });
    });
    return live;
  }

  function poll() {
    fetch(pollUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("loop.json answered " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        window.setTimeout(poll, render(data) ? 2000 : 10000);
      })
      .catch(function () {
        window.setTimeout(poll, 10000);
      });
  }

  window.setTimeout(poll, 1000);
})();
