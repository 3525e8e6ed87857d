// The console's only script: "tick every row" checkboxes. Every page works without it.
document.addEventListener("DOMContentLoaded", () => {
  for (const all of document.querySelectorAll('[data-test="select-all"]')) {
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll('[data-test="select-row"]')) box.checked = all.checked;
    });
  }
});
