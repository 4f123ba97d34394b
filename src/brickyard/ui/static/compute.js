// Compute pages: the Create Cluster form shows the fields of the chosen mode, and the Libraries tab the
// fields of the chosen library source. Without this script every field shows and the server ignores the
// ones that do not apply.
(function () {
  "use strict";

  function show(el, on) { if (el) { el.classList.toggle("hidden", !on); } }

  function clusterForm() {
    var form = document.getElementById("create-cluster-form");
    if (!form) { return; }
    var mode = form.querySelector("[data-cluster-mode]");
    var pool = form.querySelector("[data-cluster-pool]");
    var autoscale = form.querySelector("#autoscale");
    var update = function () {
      var single = mode.value === "single_node";
      var auto = autoscale.checked;
      show(document.getElementById("autoscale-option"), !single);
      form.querySelectorAll(".workers-auto").forEach(function (el) { show(el, !single && auto); });
      form.querySelectorAll(".workers-fixed").forEach(function (el) { show(el, !single && !auto); });
      var pooled = pool && pool.value !== "";
      show(document.getElementById("worker-type-field"), !pooled);
      show(document.getElementById("driver-type-field"), !pooled && !single);
      var label = document.querySelector("#worker-type-field");
      if (label && label.firstChild && label.firstChild.nodeType === 3) {
        label.firstChild.nodeValue = single ? "Node Type " : "Worker Type ";
      }
    };
    [mode, pool, autoscale].forEach(function (el) { if (el) { el.addEventListener("change", update); } });
    update();
  }

  function librarySources() {
    var radios = document.querySelectorAll("[data-lib-source]");
    if (!radios.length) { return; }
    var update = function () {
      var chosen = document.querySelector("[data-lib-source]:checked");
      var value = chosen ? chosen.value : "pypi";
      document.querySelectorAll("[data-source-panel]").forEach(function (panel) {
        show(panel, panel.getAttribute("data-source-panel") === value);
      });
    };
    radios.forEach(function (r) { r.addEventListener("change", update); });
    update();
  }

  document.addEventListener("DOMContentLoaded", function () { clusterForm(); librarySources(); });
})();
