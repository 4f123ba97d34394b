// Brickyard web UI: the few behaviours the pages need (no inline scripts: the CSP forbids them).
(function () {
  "use strict";

  // Databricks hash routes on the workspace root: /#secrets/createScope, /?o=<id>#joblist, ...
  var HASH_ROUTES = [
    [/^secrets\/createScope\/?$/, function () { return "/secrets/createScope"; }],
    [/^secrets\/?$/, function () { return "/secrets"; }],
    [/^joblist\/?$/, function () { return "/jobs"; }],
    [/^jobs?\/?$/, function () { return "/jobs"; }],
    [/^job\/(\d+)(?:\/run\/(\d+))?/, function (m) { return m[2] ? "/jobs/" + m[1] + "/runs/" + m[2] : "/jobs/" + m[1]; }],
    [/^run\/(\d+)/, function (m) { return "/jobs/runs/" + m[1]; }],
    [/^setting\/clusters\/([^/]+)\/configuration/, function (m) { return "/compute/" + encodeURIComponent(m[1]); }],
    [/^setting\/clusters\/?$/, function () { return "/compute"; }],
    [/^create\/cluster\/?$/, function () { return "/compute/create"; }],
    [/^setting\/clusters\/instance-pools/, function () { return "/compute/pools"; }],
    [/^workspace(\/.*)?$/, function (m) { return m[1] && m[1] !== "/" ? "/workspace?path=" + encodeURIComponent(decodeURIComponent(m[1])) : "/workspace"; }],
    [/^(tables|data)\/?$/, function () { return "/data"; }],
    [/^mlflow\/experiments(\/\d+)?/, function (m) { return "/ml/#/experiments" + (m[1] || ""); }],
    [/^mlflow\/models?/, function () { return "/ml/#/models"; }],
    [/^mlflow\/endpoints/, function () { return "/serving"; }],
    [/^setting\/account\/?/, function () { return "/settings/tokens"; }],
    [/^setting\/accounts/, function () { return "/admin/users"; }]
  ];

  function routeHash() {
    if (!document.querySelector("[data-hash-routes]")) { return; }
    var hash = (window.location.hash || "").replace(/^#\/?/, "");
    if (!hash) { return; }
    for (var i = 0; i < HASH_ROUTES.length; i++) {
      var m = hash.match(HASH_ROUTES[i][0]);
      if (m) { window.location.replace(HASH_ROUTES[i][1](m)); return; }
    }
  }

  // The login page keeps the hash of the page that sent us here, so /#secrets/createScope survives sign-in.
  function keepHashOnLogin() {
    var hash = window.location.hash;
    if (!hash || hash === "#password" || hash === "#token") { return; }
    document.querySelectorAll("input.next-field").forEach(function (el) {
      if (el.value.indexOf("#") < 0) { el.value = el.value + hash; }
    });
  }

  function tabs() {
    document.querySelectorAll(".tabs [data-tab]").forEach(function (tab) {
      tab.addEventListener("click", function (ev) {
        ev.preventDefault();
        var name = tab.getAttribute("data-tab");
        document.querySelectorAll(".tabs [data-tab]").forEach(function (t) {
          t.classList.toggle("active", t === tab);
        });
        document.querySelectorAll("[data-panel]").forEach(function (p) {
          p.classList.toggle("hidden", p.getAttribute("data-panel") !== name);
        });
      });
    });
  }

  // <button data-copy="#id"> copies the text (or value) of the element #id.
  function copyButtons(root) {
    (root || document).querySelectorAll("[data-copy]").forEach(function (btn) {
      if (btn.dataset.copyBound) { return; }
      btn.dataset.copyBound = "1";
      btn.addEventListener("click", function () {
        var el = document.querySelector(btn.getAttribute("data-copy"));
        if (!el) { return; }
        var text = el.value !== undefined && el.tagName !== "DIV" && el.tagName !== "PRE" ? el.value : el.textContent;
        var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 2000); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(el, text); done(); });
        } else {
          fallbackCopy(el, text); done();
        }
      });
    });
  }

  function fallbackCopy(el, text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* the value stays selectable */ }
    document.body.removeChild(area);
  }

  // <form data-confirm="Really?"> asks before submitting.
  function confirmForms(root) {
    (root || document).querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.confirmBound) { return; }
      form.dataset.confirmBound = "1";
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); ev.stopImmediatePropagation(); }
      });
    });
  }

  // <input type="checkbox" data-toggle="#id"> shows #id while checked; <select data-toggle-value="X" data-toggle="#id">.
  function toggles(root) {
    (root || document).querySelectorAll("[data-toggle]").forEach(function (el) {
      var target = document.querySelector(el.getAttribute("data-toggle"));
      if (!target || el.dataset.toggleBound) { return; }
      el.dataset.toggleBound = "1";
      var update = function () {
        var on = el.type === "checkbox" ? el.checked : el.value === el.getAttribute("data-toggle-value");
        target.classList.toggle("hidden", !on);
      };
      el.addEventListener("change", update);
      update();
    });
  }

  function init(root) { copyButtons(root); confirmForms(root); toggles(root); }

  window.Brickyard = { init: init, copy: fallbackCopy };
  routeHash();
  window.addEventListener("hashchange", routeHash);
  document.addEventListener("DOMContentLoaded", function () {
    keepHashOnLogin();
    tabs();
    init(document);
  });
  document.addEventListener("htmx:load", function (ev) { init(ev.target); });
})();
