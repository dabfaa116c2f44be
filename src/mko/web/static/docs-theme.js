// The API docs pages (/docs, /redoc) in the web UI's colours: the theme a person chose on this browser
// (theme.js keeps "light" or "dark" in localStorage), else the system's prefers-color-scheme. Dark puts
// the class "dark-mode" on <html>: Swagger UI's own stylesheet (swagger-ui.css, from /docs-assets) has
// its dark theme under it, and api-docs.css gives ReDoc's page its background; redoc.js passes ReDoc a
// dark theme. Runs before the first paint (loaded without defer), so neither page flashes white.
"use strict";

window.mkoDocsTheme = (function () {
  const root = document.documentElement;
  const system = window.matchMedia("(prefers-color-scheme: dark)");
  const listeners = [];

  function chosen() {
    try {
      const value = localStorage.getItem("mko-theme");
      return value === "light" || value === "dark" ? value : null;
    } catch (error) {
      return null; // storage disabled: follow the system
    }
  }

  function dark() {
    const choice = chosen();
    return choice ? choice === "dark" : system.matches;
  }

  function apply() {
    root.classList.toggle("dark-mode", dark());
    listeners.forEach((listener) => listener(dark()));
  }

  apply();
  system.addEventListener("change", apply); // the system switched (at dusk, say) and nothing was chosen
  return {
    dark: dark,
    onChange: (listener) => listeners.push(listener),
  };
})();
