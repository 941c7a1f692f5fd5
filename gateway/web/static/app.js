// Live updates by server-sent events: first the overview's live parts whole ("park", "alerts"), then only the
// parts that changed ("parts": {element id: its new HTML}). Without JavaScript the pages still work; they just
// do not move.
(function () {
  "use strict";
  if (!window.EventSource || !document.querySelector("[data-live]")) return;
  var source;
  function keepFocus(el, replace) {  // keep the keyboard user's place across an update
    var focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement : null;
    var key = focused ? focused.getAttribute("href") || focused.id : null;
    var now = replace();
    if (key && now) {
      var again = now.querySelector('[href="' + key + '"]') || document.getElementById(key);
      if (again) again.focus();
    }
  }
  function swap(name, html) {
    var el = document.querySelector('[data-live="' + name + '"]');
    if (el) keepFocus(el, function () { el.innerHTML = html; return el; });
  }
  function parts(json) {
    var changed = JSON.parse(json), missing = false;
    Object.keys(changed).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el) { missing = true; return; }
      keepFocus(el, function () { el.outerHTML = changed[id]; return document.getElementById(id); });
    });
    if (missing) connect();  // this page is not what the server thinks: start again with the whole
  }
  // a report's time as an age ("12s ago"), kept current here so that the server sends a row only when it changed;
  // the gateway's clock is the reference (the page says what time it was there when it was rendered)
  var park = document.querySelector('[data-live="park"]');
  var skew = park && park.dataset.now ? Number(park.dataset.now) - Date.now() / 1000 : 0;
  function ages() {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("time[data-ago]").forEach(function (t) {
      var s = Math.max(0, now - Date.parse(t.getAttribute("datetime")) / 1000);
      var text = s < 120 ? Math.floor(s) + "s ago" : s < 7200 ? Math.floor(s / 60) + "m ago"
        : s < 172800 ? Math.floor(s / 3600) + "h ago" : Math.floor(s / 86400) + "d ago";
      if (t.textContent !== text) t.textContent = text;
    });
  }
  function connect() {
    if (source) source.close();
    source = new EventSource("/events");
    source.addEventListener("park", function (e) { swap("park", e.data); ages(); });
    source.addEventListener("alerts", function (e) { swap("alerts", e.data); });
    source.addEventListener("parts", function (e) { parts(e.data); ages(); });
  }
  connect();
  ages();
  setInterval(ages, 1000);
})();
