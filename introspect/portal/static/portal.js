// Progressive enhancement only: every page works without this file.
// A "Copy" button next to a newly shown key copies it to the clipboard.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        field.select();
        button.textContent = "Press Ctrl+C to copy";
      }
    });
  }
  for (const field of document.querySelectorAll("input[readonly]")) {
    field.addEventListener("focus", () => field.select());
  }
});
