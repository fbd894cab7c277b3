// Keeps the status page live: the server sends the new content of <main>
// (rendered and escaped by html/template) as a server-sent event whenever
// something changes. Without JavaScript the page refreshes itself instead.
(function () {
  "use strict";
  var main = document.getElementById("content");
  var live = document.getElementById("live");
  if (!main || !live || !window.EventSource) {
    return;
  }
  // The page is live: the <noscript> refresh does not apply, so say so.
  var es = new EventSource(main.getAttribute("data-events"));
  function state(s, text) {
    live.setAttribute("data-state", s);
    live.textContent = text;
  }
  es.onopen = function () { state("on", "Live"); };
  es.onerror = function () { state("lost", "Reconnecting…"); };
  es.addEventListener("update", function (e) {
    // Keep keyboard focus and scroll where they were.
    var focused = document.activeElement && document.activeElement.id;
    var x = window.scrollX, y = window.scrollY;
    main.innerHTML = e.data;
    var s = document.getElementById("summary");
    if (s && s.getAttribute("data-title")) {
      document.title = s.getAttribute("data-title");
    }
    if (focused) {
      var el = document.getElementById(focused);
      if (el && el !== document.body) {
        el.focus({ preventScroll: true });
      }
    }
    window.scrollTo(x, y);
    main.setAttribute("data-updates", String(Number(main.getAttribute("data-updates") || 0) + 1));
  });
})();
