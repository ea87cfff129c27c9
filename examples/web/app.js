// A plain page over the Keel gateway: start a task, follow its product events (SSE), answer a wait.
// Product events only: task.started, task.progress, task.partial, task.waiting, task.completed, task.failed.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token"); // optional: an API key or bearer token for a gateway with auth
window.keelLog = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function requestId() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

function showField(field, value) {
  if (field === "points") {
    const list = $("field-points");
    list.replaceChildren(...(Array.isArray(value) ? value : []).map((p) => {
      const li = document.createElement("li");
      li.textContent = p;
      return li;
    }));
  } else if ($(`field-${field}`)) {
    $(`field-${field}`).textContent = value ?? "";
  }
}

function clearFields() {
  for (const f of ["title", "summary"]) $(`field-${f}`).textContent = "";
  $("field-points").replaceChildren();
}

let waitingFor = null;

function follow(executionId) {
  const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
  // EventSource reconnects by itself and sends Last-Event-ID: the gateway resumes after it.
  const source = new EventSource(`/v1/executions/${executionId}/events${query}`);
  const on = (type, handler) => source.addEventListener(type, (message) => {
    const event = JSON.parse(message.data);
    window.keelLog.push(event);
    handler(event);
  });
  on("task.started", () => { $("status").textContent = "running"; });
  on("task.progress", (e) => {
    $("progress-message").textContent = e.message;
    if (e.percent !== null) $("progress").value = e.percent;
    $("status").textContent = "running";
    $("waiting").hidden = true;
  });
  on("task.partial", (e) => {
    if (e.data.reset) clearFields();
    else showField(e.data.field, e.data.value);
  });
  on("task.waiting", (e) => {
    waitingFor = e.waiting_for.signals[0];
    $("status").textContent = "waiting";
    $("waiting-message").textContent = waitingFor.message || e.message;
    $("waiting").hidden = false;
  });
  on("task.completed", (e) => {
    $("status").textContent = "completed";
    $("progress").value = 100;
    $("waiting").hidden = true;
    $("result").textContent = JSON.stringify(e.data, null, 2);
    source.close();
  });
  on("task.failed", (e) => {
    $("status").textContent = "failed";
    $("waiting").hidden = true;
    $("result").textContent = e.message;
    source.close();
  });
}

async function answer(approved) {
  if (!waitingFor) return;
  const body = { payload: { approved, note: $("note").value }, request_id: requestId() };
  const response = await fetch(waitingFor.answer.path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    $("result").textContent = (await response.json()).error.message;
    return;
  }
  $("waiting").hidden = true;
  waitingFor = null;
}

$("approve").addEventListener("click", () => answer(true));
$("reject").addEventListener("click", () => answer(false));

$("start-form").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  clearFields();
  window.keelLog = [];
  $("result").textContent = "";
  $("task").hidden = false;
  $("status").textContent = "starting";
  const response = await fetch("/v1/runnables/review/executions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ topic: $("topic").value }),
  });
  const execution = await response.json();
  if (!response.ok) {
    $("status").textContent = "refused";
    $("result").textContent = execution.error.message;
    return;
  }
  $("task-id").textContent = execution.id;
  follow(execution.id);
});
