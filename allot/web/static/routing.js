// Routing pages (inbox, board): ticking offer countdowns and waiting times, the inbox presence
// heartbeat, and a refresh of the live panels each time their event stream (re)connects, since
// messages sent while a browser was disconnected are not replayed.
//
// Times come from the server as seconds relative to the moment the page was rendered
// (data-countdown, data-elapsed), so a browser whose clock is wrong still shows them right.
(function () {
  "use strict";
  if (window.allotRouting) {
    return; // included by several templates; start once
  }
  window.allotRouting = true;

  var HEARTBEAT_MS = 60000;
  var firstSeen = new WeakMap();

  function pad(n) {
    return n < 10 ? "0" + n : String(n);
  }

  // 65 -> "1:05", 7384 -> "2:03:04" (the shape the server renders)
  function clockText(seconds) {
    var total = Math.max(0, Math.floor(seconds));
    var hours = Math.floor(total / 3600);
    var minutes = Math.floor((total % 3600) / 60);
    var secs = total % 60;
    return hours ? hours + ":" + pad(minutes) + ":" + pad(secs) : minutes + ":" + pad(secs);
  }

  function secondsShown(element, now) {
    if (!firstSeen.has(element)) {
      firstSeen.set(element, now);
    }
    return (now - firstSeen.get(element)) / 1000;
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown]").forEach(function (element) {
      var left = Number(element.dataset.countdown) - secondsShown(element, now);
      element.textContent = left > 0 ? clockText(left) : element.dataset.expiredText || "0:00";
    });
    document.querySelectorAll("[data-elapsed]").forEach(function (element) {
      element.textContent = clockText(Number(element.dataset.elapsed) + secondsShown(element, now));
    });
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Presence: while the inbox is open the agent counts as present (the page says so).
  function heartbeat() {
    var source = document.querySelector("[data-heartbeat-url]");
    if (!source) {
      return;
    }
    fetch(source.dataset.heartbeatUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
    }).catch(function () {
      // offline for a moment: the next beat tries again
    });
  }

  document.addEventListener("htmx:sseOpen", function (event) {
    var root = event.target instanceof Element ? event.target : document;
    root.querySelectorAll("[data-live-panel]").forEach(function (panel) {
      htmx.trigger(panel, "allot:refresh");
    });
  });

  function start() {
    tick();
    heartbeat();
    window.setInterval(tick, 1000);
    window.setInterval(heartbeat, HEARTBEAT_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
