// Small behaviours of the counter UI (no inline scripts: the pages' CSP forbids them).
"use strict";
document.addEventListener("htmx:afterRequest", function (event) {
  const form = event.detail.elt;
  if (form && form.matches && form.matches("form[data-reset-after]") && event.detail.successful) {
    form.reset();
  }
});
// A form re-rendered with errors moves the focus to its summary.
document.addEventListener("DOMContentLoaded", function () {
  const summary = document.getElementById("form-errors");
  if (summary) { summary.focus(); }
  // Drag and drop of a scan onto the import zone fills its file input.
  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    const input = zone.querySelector("input[type=file]");
    zone.addEventListener("dragover", function (e) { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("over");
      if (input && e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        const form = zone.closest("form");
        if (form) { form.requestSubmit(); }
      }
    });
  });
});
