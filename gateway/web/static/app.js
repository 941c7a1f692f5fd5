// Live updates: the server sends the overview's changing parts as HTML fragments (server-sent events).
// Without JavaScript the pages still work; they just do not move.
(function () {
  "use strict";
  if (!window.EventSource || !document.querySelector("[data-live]")) return;
  var source = new EventSource("/events");
  function swap(name, html) {
    var el = document.querySelector('[data-live="' + name + '"]');
    if (!el) return;
    var focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement : null;
    var key = focused ? focused.getAttribute("href") || focused.id : null;
    el.innerHTML = html;
    if (key) {  // keep the keyboard user's place across an update
      var again = el.querySelector('[href="' + key + '"]') || document.getElementById(key);
      if (again) again.focus();
    }
  }
  ["park", "alerts"].forEach(function (name) {
    source.addEventListener(name, function (e) { swap(name, e.data); });
  });
})();
