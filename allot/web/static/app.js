// Allot's only script of its own: it sends the CSRF token with every htmx request (forms carry
// it in a hidden field already), and moves focus to the main area after htmx swaps it, so
// keyboard and screen-reader users land where the new content is.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "main") {
      event.detail.target.focus();
    }
  });
})();
