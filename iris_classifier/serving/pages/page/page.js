"use strict";
// Sends an endpoint's example request from the page and shows the answer as it came back.
const SHOWN_HEADERS = ["content-type", "x-served-by", "x-request-id"];

// One line per object or list that holds only numbers and strings, as the examples are shown.
function readable(value, indent = "") {
  const children = value !== null && typeof value === "object" ? Object.values(value) : [];
  if (!children.some((child) => child !== null && typeof child === "object")) {
    return JSON.stringify(value);
  }
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    return `[\n${value.map((child) => inner + readable(child, inner)).join(",\n")}\n${indent}]`;
  }
  const items = Object.entries(value).map(
    ([key, child]) => `${inner}${JSON.stringify(key)}: ${readable(child, inner)}`,
  );
  return `{\n${items.join(",\n")}\n${indent}}`;
}

function shown(text) {
  try {
    return readable(JSON.parse(text));
  } catch {
    return text;
  }
}

async function tryIt(example) {
  const answer = example.querySelector(".answer");
  const status = answer.querySelector(".status");
  const headers = answer.querySelector(".headers");
  const body = answer.querySelector(".body");
  const request = { method: example.dataset.method, headers: {} };
  const sent = example.querySelector("textarea");
  if (sent) {
    request.body = sent.value;
    request.headers["Content-Type"] = "application/json";
  }
  status.textContent = "waiting for the answer…";
  headers.textContent = body.textContent = "";
  answer.hidden = false;
  try {
    const response = await fetch(example.dataset.path, request);
    const text = await response.text();
    status.textContent = `${response.status} ${response.statusText}`;
    status.dataset.status = String(response.status);
    headers.textContent = SHOWN_HEADERS.filter((name) => response.headers.has(name))
      .map((name) => `${name}: ${response.headers.get(name)}`)
      .join("\n");
    body.textContent = shown(text);
  } catch (error) {
    status.textContent = `no answer: ${error}`;
    status.dataset.status = "failed";
  }
}

for (const node of document.querySelectorAll("[data-origin]")) {
  node.textContent = window.location.origin;
}
for (const example of document.querySelectorAll(".example")) {
  example.querySelector("button").addEventListener("click", () => tryIt(example));
}
