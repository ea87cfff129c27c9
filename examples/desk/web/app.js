// The desk's page: the inbox (GET /desk/tickets), one ticket's product events over SSE (its flow's,
// which pass on its classifier's fields as task.partial: the flow runs in the worker's process, and
// the gateway follows it there), its approval answered through the gateway, and what the webhook
// channel got.
// Product events only: task.started, task.progress, task.partial, task.waiting, task.completed, task.failed.
"use strict";

const $ = (id) => document.getElementById(id);
// the desk's API key, given as /ui/?token=... (the service prints that address); EventSource cannot
// send headers, so the event streams carry it as ?access_token=
const token = new URLSearchParams(location.search).get("token") || "";
const auth = { Authorization: `Bearer ${token}` };
window.deskLog = [];
let current = null; // {id, execution_id}
let flowSource = null;
let waitingFor = null;

function requestId() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

function follow(executionId, handlers) {
  const source = new EventSource(`/v1/executions/${executionId}/events?access_token=${encodeURIComponent(token)}`);
  for (const [type, handler] of Object.entries(handlers)) {
    source.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      window.deskLog.push(event);
      handler(event);
    });
  }
  for (const end of ["task.completed", "task.failed"]) source.addEventListener(end, () => source.close());
  return source;
}

function showTriage(field, value) {
  const cell = $(`field-${field}`);
  if (cell) cell.textContent = value ?? "";
}

function addStage(message) {
  const li = document.createElement("li");
  li.textContent = message;
  $("stages").append(li);
}

function followFlow(executionId) {
  if (flowSource) flowSource.close();
  flowSource = follow(executionId, {
    "task.started": () => { $("status").textContent = "running"; },
    "task.partial": (e) => { // the classifier's fields, as they stream
      if (e.data.reset) ["category", "priority", "summary"].forEach((f) => showTriage(f, ""));
      else showTriage(e.data.field, e.data.value);
    },
    "task.progress": (e) => {
      if (e.percent !== null) {
        $("progress").value = e.percent;
        addStage(e.message); // the flow's own stage lines carry a percent; "3 steps done" does not
      }
      $("status").textContent = "running";
      $("waiting").hidden = true;
    },
    "task.waiting": (e) => {
      waitingFor = e.waiting_for.signals[0];
      $("status").textContent = "waiting";
      $("waiting-message").textContent = waitingFor.message || e.message;
      $("waiting").hidden = false;
    },
    "task.completed": (e) => {
      $("status").textContent = "completed";
      $("progress").value = 100;
      $("waiting").hidden = true;
      $("result").textContent = JSON.stringify(e.data, null, 2);
    },
    "task.failed": (e) => {
      $("status").textContent = "failed";
      $("waiting").hidden = true;
      $("result").textContent = e.message;
    },
  });
}

function open(ticket) {
  current = { ...ticket };
  $("ticket").hidden = false;
  $("ticket-id").textContent = ticket.id;
  $("stages").replaceChildren();
  $("result").textContent = "";
  ["category", "priority", "summary"].forEach((f) => showTriage(f, ""));
  followFlow(ticket.execution_id);
  for (const row of document.querySelectorAll("tr.ticket")) row.classList.toggle("selected", row.dataset.id === ticket.id);
}

async function refresh() {
  const tickets = await (await fetch("/desk/tickets", { headers: auth })).json();
  if (tickets.length) {
    $("tickets").replaceChildren(...tickets.map((t) => {
      const row = document.createElement("tr");
      row.className = "ticket";
      row.dataset.id = t.id;
      for (const text of [t.id, t.customer, t.subject, t.status]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      row.addEventListener("click", () => open(t));
      return row;
    }));
  }
  const newest = tickets.find((t) => t.execution_id);
  if (!current && newest) open(newest);
  if (current) {
    for (const row of document.querySelectorAll("tr.ticket")) row.classList.toggle("selected", row.dataset.id === current.id);
  }
  const notes = await (await fetch("/desk/notifications", { headers: auth })).json();
  $("notifications").replaceChildren(...notes.map((n) => {
    const li = document.createElement("li");
    li.textContent = `${n.type}: ${n.message}`;
    return li;
  }));
}

async function answer(approved) {
  if (!waitingFor) return;
  const body = { payload: { approved, by: $("approver").value || "desk lead" }, request_id: requestId() };
  const response = await fetch(waitingFor.answer.path, {
    method: "POST", headers: { "Content-Type": "application/json", ...auth }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    $("result").textContent = (await response.json()).error.message;
    return;
  }
  $("waiting").hidden = true;
  waitingFor = null;
}

$("approve").addEventListener("click", () => answer(true));
$("reject").addEventListener("click", () => answer(false));
refresh();
setInterval(refresh, 500);
