// The review grid without page reloads, and by keyboard. Without JavaScript the same forms post and the page reloads.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const grid = document.getElementById("grid");
  if (!grid) return;
  const cells = Array.from(grid.querySelectorAll(".cell"));
  const status = document.getElementById("review-status");
  const figure = document.getElementById("reviewed-figure");

  const next = (from) => {
    const i = cells.indexOf(from);
    const undecided = cells.slice(i + 1).concat(cells.slice(0, i)).find((c) => !/decided-/.test(c.className));
    (undecided || cells[Math.min(i + 1, cells.length - 1)]).focus();
  };

  const decide = async (form, decision) => {
    const cell = form.closest(".cell");
    const body = new FormData(form);
    body.set("decision", decision);
    const resp = await fetch(form.action, { method: "POST", body, headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!resp.ok) {
      const text = await resp.text();
      const doc = new DOMParser().parseFromString(text, "text/html");
      const why = doc.querySelector("[role=alert]");
      alert(why ? why.textContent : "The decision was not saved (" + resp.status + ").");
      return;
    }
    const state = await resp.json();
    form.querySelector("input[name=seen]").value = state.seen;
    const button = form.querySelector("button[value=" + decision + "]");
    cell.classList.remove("decided-confirm", "decided-reject");
    cell.classList.add("decided-" + decision);
    cell.classList.toggle("found-parasite", button.classList.contains("says-parasite"));
    cell.querySelector(".decision").textContent = button.textContent + " (" + state.reviewer + ")";
    document.getElementById("review-progress").value = state.decided;
    document.getElementById("review-count").textContent = state.decided + " of " + cells.length + " decided";
    status.textContent = state.text;
    figure.textContent = state.figure;
    document.getElementById("headline").textContent = state.headline;
    document.getElementById("headline-text").textContent = state.headline_text;
    next(cell);
  };

  // Show one group, or the undecided cells only: the page works without this, showing them all.
  const filter = document.getElementById("grid-filter");
  const show = document.getElementById("show");
  filter.hidden = false;
  show.addEventListener("change", () => {
    const want = show.value;
    for (const el of grid.querySelectorAll(".cell, .group")) {
      const decided = /decided-/.test(el.className);
      el.hidden = want !== "all" && (want === "undecided" ? decided || el.classList.contains("group") : el.dataset.group !== want);
    }
  });

  grid.addEventListener("click", (event) => {
    const button = event.target.closest("button[name=decision]");
    if (!button) return;
    event.preventDefault();
    decide(button.form, button.value);
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const cell = document.activeElement && document.activeElement.closest(".cell") || cells[0];
    if (!cell) return;
    const i = cells.indexOf(cell);
    const key = event.key.toLowerCase();
    if (key === "c") decide(cell.querySelector("form"), "confirm");
    else if (key === "x") decide(cell.querySelector("form"), "reject");
    else if (key === "n" || key === "arrowright") (cells[i + 1] || cell).focus();
    else if (key === "p" || key === "arrowleft") (cells[i - 1] || cell).focus();
    else return;
    event.preventDefault();
  });
});
