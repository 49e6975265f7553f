// The light/dark switch: `html[data-theme]`, remembered in localStorage.
(function () {
  "use strict";
  function sync(button) {
    var dark = document.documentElement.dataset.theme === "dark";
    button.setAttribute("aria-pressed", String(dark));
    button.textContent = dark ? "浅色" : "深色";
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("#theme-switch");
    if (!button) { return; }
    var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem("theme", next); } catch (e) {}
    sync(button);
  });
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-switch");
    if (button) { sync(button); }
  });
})();
