// The API reference page (/redoc): ReDoc on mko's OpenAPI schema. A file, not inline script. ReDoc
// writes its styles into <style> elements; they carry the nonce the page's policy names, which this
// script reads from its own tag (document.currentScript is only set while the script first runs).
"use strict";

const nonce = document.currentScript ? document.currentScript.nonce : undefined;

window.addEventListener("load", () => {
  Redoc.init("/openapi.json", { nonce: nonce }, document.getElementById("redoc"));
});
