// Runs before the first paint (loaded without defer): the theme a person chose on this browser
// ("light" or "dark", kept in localStorage), else the system's prefers-color-scheme (CSS does that).
"use strict";
(function () {
  const root = document.documentElement;
  root.classList.add("js"); // the compact menu collapses only where a script can open it
  try {
    const chosen = localStorage.getItem("mko-theme");
    if (chosen === "light" || chosen === "dark") root.dataset.theme = chosen;
  } catch (error) {
    /* storage disabled: follow the system */
  }
})();
