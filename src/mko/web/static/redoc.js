// The API reference page (/redoc): ReDoc on mko's OpenAPI schema. A file, not inline script. ReDoc
// writes its styles into <style> elements; they carry the nonce the page's policy names, which this
// script reads from its own tag (document.currentScript is only set while the script first runs).
// In the dark (docs-theme.js), ReDoc gets the web UI's dark colours (app.css) as its theme.
"use strict";

const nonce = document.currentScript ? document.currentScript.nonce : undefined;

const DARK = {
  colors: {
    primary: { main: "#6c9ef8" },
    success: { main: "#4cc38a" },
    warning: { main: "#e3b341" },
    error: { main: "#ff7b72" },
    text: { primary: "#e3e8ef", secondary: "#9aa6b4" },
    border: { dark: "#2b3440", light: "#2b3440" },
  },
  schema: {
    nestedBackground: "#1a2029",
    linesColor: "#2b3440",
    typeNameColor: "#9aa6b4",
    typeTitleColor: "#9aa6b4",
  },
  typography: {
    code: { color: "#e3b341", backgroundColor: "#1a2029" },
    links: { color: "#6c9ef8", visited: "#6c9ef8", hover: "#8db4ff" },
  },
  sidebar: { backgroundColor: "#1a2029", textColor: "#e3e8ef", activeTextColor: "#8db4ff" },
  rightPanel: { backgroundColor: "#0d1117", textColor: "#e3e8ef" },
  fab: { backgroundColor: "#1a2029", color: "#8db4ff" }, // the menu button on a phone
};

function render(dark) {
  const options = { nonce: nonce };
  if (dark) options.theme = DARK;
  Redoc.init("/openapi.json", options, document.getElementById("redoc"));
}

window.addEventListener("load", () => {
  render(window.mkoDocsTheme.dark());
  window.mkoDocsTheme.onChange(render);
});
