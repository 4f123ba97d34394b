// Workspace pages: a <details class="menu"> closes when another opens or on a click elsewhere / Escape.
(function () {
  "use strict";
  function closeMenus(except) {
    document.querySelectorAll("details.menu[open]").forEach(function (d) {
      if (d !== except && !d.contains(except)) { d.removeAttribute("open"); }
    });
  }
  document.addEventListener("click", function (ev) {
    var menu = ev.target.closest ? ev.target.closest("details.menu") : null;
    closeMenus(menu);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") { closeMenus(null); }
  });
})();
