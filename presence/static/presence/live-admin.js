// "Live now" in the staff pages (Django's admin and Wagtail's): refreshes the online count and the
// ranking from the page's data-url every data-refresh seconds.
(function () {
  "use strict";
  // Titles are data: they only ever reach the page through textContent.
  var root = document.querySelector(".presence-live-page");
  var online = document.getElementById("presence-online");
  var body = document.getElementById("presence-rooms");
  var empty = document.getElementById("presence-empty");
  var status = document.getElementById("presence-status");
  var every = (parseInt(root.dataset.refresh, 10) || 5) * 1000;

  function safeHref(url) {
    return typeof url === "string" && /^(\/(?!\/)|https?:\/\/)/.test(url) ? url : null;
  }

  function render(data) {
    online.textContent = String(data.online);
    var rows = document.createDocumentFragment();
    (data.rooms || []).forEach(function (room) {
      var tr = document.createElement("tr");
      var name = document.createElement("td");
      var label = room.title || room.room;
      var href = safeHref(room.url);
      if (href) {
        var a = document.createElement("a");
        a.href = href;
        a.textContent = label;
        name.appendChild(a);
      } else {
        name.textContent = label;
      }
      var count = document.createElement("td");
      count.className = "number";
      count.textContent = String(room.count);
      tr.appendChild(name);
      tr.appendChild(count);
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    empty.hidden = (data.rooms || []).length > 0;
    status.textContent = "";
    status.classList.remove("presence-stale");
  }

  function refresh() {
    if (document.hidden) { return; }
    fetch(root.dataset.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok || !(response.headers.get("Content-Type") || "").startsWith("application/json")) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(render)
      .catch(function () {
        status.textContent = "{{ _('Could not refresh; showing the last numbers.')|escapejs }}";
        status.classList.add("presence-stale");
      });
  }

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
