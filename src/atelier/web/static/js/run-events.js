// Keeps an AutoML run's page live: the server sends the live part of the page, rendered and
// escaped on its side, as a `run` event whenever the run's job changes, then `end` once it
// has ended. Closing on `end` keeps EventSource from reconnecting to a finished stream.
(function () {
  "use strict";
  const live = document.querySelector("[data-run-events]");
  if (!live || !window.EventSource) {
    return;
  }
  const source = new EventSource(live.dataset.runEvents);
  source.addEventListener("run", function (event) {
    live.innerHTML = event.data;
  });
  source.addEventListener("end", function () {
    source.close();
    live.removeAttribute("data-run-events");
  });
})();
