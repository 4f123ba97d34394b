// Upload Data: drag and drop (or browse) several files; each one is sent as its own XHR with an
// upload progress bar to /data/upload/file; "Next" shows the notebook snippets for them.
(function () {
  "use strict";

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || "";
    } catch (e) { return ""; }
  }

  function humanSize(n) {
    if (n < 1024) { return n + " B"; }
    if (n < 1024 * 1024) { return (n / 1024).toFixed(1) + " KB"; }
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function init() {
    var zone = document.getElementById("dropzone");
    if (!zone) { return; }
    var input = document.getElementById("upload-input");
    var list = document.getElementById("upload-list");
    var dirInput = document.getElementById("upload-dir");
    var nextDir = document.getElementById("next-dir");
    var nextForm = document.getElementById("upload-next-form");
    var nextBtn = document.getElementById("upload-next");
    var renamed = document.getElementById("renamed");
    var renamedList = document.getElementById("renamed-list");
    var pending = 0;
    var uploaded = {};

    function refreshNext() {
      nextBtn.disabled = pending > 0 || Object.keys(uploaded).length === 0;
    }

    function addUploaded(name) { uploaded[name] = true; }

    // The snippets list the files in the order they were chosen (not the order they finished in).
    nextForm.addEventListener("submit", function () {
      nextForm.querySelectorAll("input[name=file]").forEach(function (e) { e.remove(); });
      var seen = {};
      list.querySelectorAll(".upload-item.done").forEach(function (item) {
        var name = item.getAttribute("data-name");
        if (!name || seen[name]) { return; }
        seen[name] = true;
        var hidden = document.createElement("input");
        hidden.type = "hidden";
        hidden.name = "file";
        hidden.value = name;
        nextForm.appendChild(hidden);
      });
    });

    function upload(file) {
      var item = el("li", "upload-item");
      item.appendChild(el("div", "upload-name", file.name));
      item.appendChild(el("div", "muted small", humanSize(file.size)));
      var bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 0;
      item.appendChild(bar);
      var state = el("div", "upload-state small", "Uploading…");
      item.appendChild(state);
      list.appendChild(item);
      pending += 1;
      refreshNext();
      dirInput.readOnly = true;

      var xhr = new XMLHttpRequest();
      var url = "/data/upload/file?dir=" + encodeURIComponent(dirInput.value) + "&name=" + encodeURIComponent(file.name);
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.addEventListener("progress", function (ev) {
        if (ev.lengthComputable) { bar.value = Math.round(100 * ev.loaded / ev.total); }
      });
      xhr.addEventListener("load", function () {
        pending -= 1;
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = {}; }
        if (xhr.status === 200 && body.name) {
          bar.value = 100;
          item.classList.add("done");
          item.setAttribute("data-path", body.path);
          item.setAttribute("data-name", body.name);
          // The name the file got: a name already taken in the folder keeps its file, and this one
          // gets "-1", "-2", ... before its extension.
          state.textContent = body.renamed ? "Uploaded as " : "Uploaded ✓";
          if (body.renamed) {
            state.appendChild(el("span", "mono upload-final", body.name));
            state.appendChild(document.createTextNode(" ✓"));
          }
          addUploaded(body.name);
          if (body.renamed) {
            renamed.classList.remove("hidden");
            renamedList.appendChild(el("li", "renamed-item", body.original + " was renamed to " + body.name));
          }
        } else {
          item.classList.add("failed");
          state.textContent = "Failed: " + (body.message || ("HTTP " + xhr.status));
        }
        refreshNext();
      });
      xhr.addEventListener("error", function () {
        pending -= 1;
        item.classList.add("failed");
        state.textContent = "Failed: the connection was lost.";
        refreshNext();
      });
      xhr.send(file);
    }

    function uploadAll(files) {
      for (var i = 0; i < files.length; i++) { upload(files[i]); }
    }

    zone.addEventListener("click", function (ev) { if (ev.target !== input) { input.click(); } });
    zone.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); }
    });
    input.addEventListener("change", function () { uploadAll(input.files); input.value = ""; });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (ev) { ev.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (ev) { ev.preventDefault(); zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (ev) {
      if (ev.dataTransfer && ev.dataTransfer.files) { uploadAll(ev.dataTransfer.files); }
    });
    dirInput.addEventListener("input", function () { nextDir.value = dirInput.value; });
    refreshNext();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
