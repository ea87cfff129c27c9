// The gateway's own console: any runnable, its product events (SSE), its waits. No external assets.
// Product events only: task.started, task.progress, task.partial, task.waiting, task.completed, task.failed.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
let runnables = [];
let waitingFor = null;
let source = null;
window.keelLog = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function requestId() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// a starting point for the input box: every required property with an empty value of its type
function skeleton(schema) {
  if (!schema || schema.type !== "object" || !schema.properties) return {};
  const empty = { string: "", number: 0, integer: 0, boolean: false, array: [], object: {} };
  const out = {};
  for (const key of schema.required || Object.keys(schema.properties)) {
    const type = (schema.properties[key] || {}).type;
    out[key] = type in empty ? empty[type] : null;
  }
  return out;
}

function choose() {
  const chosen = runnables.find((r) => r.name === $("runnable").value);
  $("runnable-description").textContent = chosen ? chosen.description || chosen.kind : "";
  if (chosen) $("input").value = JSON.stringify(skeleton(chosen.input_schema), null, 2);
}

async function loadRunnables() {
  const response = await fetch("/v1/runnables", { headers: headers() });
  if (!response.ok) {
    $("error").textContent = await errorText(response);
    return;
  }
  runnables = await response.json();
  $("runnable").replaceChildren(...runnables.map((r) => new Option(r.name, r.name)));
  if (!runnables.length) $("error").textContent = "this gateway serves no runnables: list some under runnables in keel.toml";
  choose();
}

function showField(field, value) {
  let row = document.querySelector(`dd[data-field="${CSS.escape(field)}"]`);
  if (!row) {
    const dt = document.createElement("dt");
    dt.textContent = field;
    row = document.createElement("dd");
    row.dataset.field = field;
    $("fields").append(dt, row);
  }
  row.textContent = typeof value === "string" ? value : JSON.stringify(value);
}

function follow(executionId) {
  const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
  source = new EventSource(`/v1/executions/${executionId}/events${query}`); // resumes with Last-Event-ID
  const on = (type, handler) => source.addEventListener(type, (message) => {
    const event = JSON.parse(message.data);
    window.keelLog.push(event);
    $("log").textContent += `${event.seq} ${event.type} ${event.message || ""}\n`;
    handler(event);
  });
  on("task.started", () => { $("status").textContent = "running"; });
  on("task.progress", (e) => {
    $("progress-message").textContent = e.message;
    if (e.percent !== null && e.percent !== undefined) $("progress").value = e.percent;
    $("status").textContent = "running";
    $("waiting").hidden = true;
  });
  on("task.partial", (e) => {
    if (e.data.reset) $("fields").replaceChildren();
    else showField(e.data.field, e.data.value);
  });
  on("task.waiting", (e) => {
    waitingFor = e.waiting_for.signals[0];
    $("status").textContent = "waiting";
    $("waiting-message").textContent = waitingFor.message || e.message;
    $("waiting").hidden = false;
  });
  const end = (status, text) => {
    $("status").textContent = status;
    $("waiting").hidden = true;
    $("result").textContent = text;
    source.close();
  };
  on("task.completed", (e) => { $("progress").value = 100; end("completed", JSON.stringify(e.data, null, 2)); });
  on("task.failed", (e) => end("failed", e.message));
}

$("runnable").addEventListener("change", choose);

$("send").addEventListener("click", async () => {
  if (!waitingFor) return;
  let payload;
  try {
    payload = JSON.parse($("answer").value);
  } catch (err) {
    $("error").textContent = `the answer is not JSON: ${err.message}`;
    return;
  }
  const body = { payload, request_id: requestId() };
  const response = await fetch(waitingFor.answer.path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    $("error").textContent = await errorText(response);
    return;
  }
  $("error").textContent = "";
  $("waiting").hidden = true;
  waitingFor = null;
});

$("start-form").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  let input;
  try {
    input = JSON.parse($("input").value || "{}");
  } catch (err) {
    $("error").textContent = `the input is not JSON: ${err.message}`;
    return;
  }
  if (source) source.close();
  window.keelLog = [];
  $("error").textContent = "";
  $("fields").replaceChildren();
  $("result").textContent = "";
  $("log").textContent = "";
  $("progress").value = 0;
  $("task").hidden = false;
  $("status").textContent = "starting";
  const name = encodeURIComponent($("runnable").value);
  const response = await fetch(`/v1/runnables/${name}/executions`, { method: "POST", headers: headers(), body: JSON.stringify(input) });
  if (!response.ok) {
    $("status").textContent = "refused";
    $("error").textContent = await errorText(response);
    return;
  }
  const execution = await response.json();
  $("task-id").textContent = execution.id;
  follow(execution.id);
});

loadRunnables();
