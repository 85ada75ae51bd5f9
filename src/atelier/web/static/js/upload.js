// Upload forms (`form[data-upload]`) sent with XMLHttpRequest, the one browser API that reports
// how much of a request body has gone: the progress bar follows the bytes sent. The server
// answers JSON here (`Accept`): the new version's address, or a problem document whose
// `detail` is shown. Without this script the same form posts normally. The page's own text
// (translated) comes in data attributes, so this file holds no message.
(function () {
  "use strict";

  function problemOf(request) {
    try {
      const problem = JSON.parse(request.responseText);
      const details = (problem.errors || []).map(function (e) { return e.detail; });
      return [problem.detail].concat(details).filter(Boolean).join(" · ");
    } catch (error) {
      return "";
    }
  }

  function enhance(form) {
    const bar = form.querySelector("[data-upload-progress]");
    const status = form.querySelector("[data-upload-status]");
    const failure = form.querySelector("[data-upload-error]");
    const button = form.querySelector("button[type=submit]");

    function fail(message) {
      failure.textContent = message || form.dataset.failed;
      failure.hidden = false;
      status.textContent = "";
      bar.hidden = true;
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", function (progress) {
        if (progress.lengthComputable && progress.total > 0) {
          bar.value = Math.floor((100 * progress.loaded) / progress.total);
        }
      });
      request.upload.addEventListener("load", function () {
        bar.value = 100;
        status.textContent = form.dataset.processing;
      });
      request.addEventListener("load", function () {
        if (request.status === 201) {
          const answer = JSON.parse(request.responseText);
          window.location.assign(answer.location);
        } else {
          fail(problemOf(request));
        }
      });
      request.addEventListener("error", function () { fail(""); });
      request.addEventListener("abort", function () { fail(""); });
      failure.hidden = true;
      bar.value = 0;
      bar.hidden = false;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      // FormData keeps the form's order: the CSRF token and the name go before the file.
      request.send(new FormData(form));
    });
  }

  document.querySelectorAll("form[data-upload]").forEach(enhance);
})();
