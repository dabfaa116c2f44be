// mko's live parts: node reachability, following running operations, select-all. No framework.
"use strict";

function setPill(el, text, cls) {
  el.textContent = text;
  el.className = "pill " + cls;
}

async function fillReachability(table) {
  // Only the rows of this page: the server reads them from the refresher's cache, whatever the inventory size.
  // A page of many rows (the dashboard's every card) asks for every stored result instead: one query,
  // and no URL thousands of ids long.
  const ids = Array.from(table.querySelectorAll("[data-reach-node]"), (cell) => "node_id=" + cell.dataset.reachNode);
  if (ids.length === 0) return;
  const scope = table.dataset.clusterId ? "cluster_id=" + table.dataset.clusterId : "";
  const url = "/api/nodes/reachability?" + (ids.length <= 200 ? ids.join("&") : scope);
  for (;;) {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const data = await response.json();
      for (const cell of table.querySelectorAll("[data-reach-node]")) {
        const result = data[cell.dataset.reachNode];
        if (!result) continue;
        const pill = cell.querySelector(".pill") || cell;
        // The node's state from what the server stores (its background probes, the last wake, the
        // last Kubernetes readiness); a page never makes mko probe.
        const state = result.state || (result.up === null ? "unknown" : result.up ? "up" : "off");
        setPill(pill, state === "unknown" ? "not probed yet" : state, state === "unknown" ? "" : "state-" + state.toLowerCase());
        const age = result.age_seconds === null ? "" : ", probed " + Math.round(result.age_seconds) + " s ago";
        const latency = result.latency_ms === null || result.latency_ms === undefined ? "" : ", " + result.latency_ms + " ms";
        pill.title = (result.state_note || result.error || "port " + result.port) + latency + age;
        const wake = table.querySelector("[data-last-wake='" + cell.dataset.reachNode + "']");
        if (wake && result.wake_operation_id) {
          const link = document.createElement("a");
          link.href = "/operations/" + result.wake_operation_id;
          const outcome = document.createElement("span");
          setPill(outcome, result.wake_state, result.wake_state);
          link.appendChild(outcome);
          wake.replaceChildren(link);
        }
      }
    } catch (error) {
      return; /* the page still works without live reachability */
    }
    await new Promise((resolve) => setTimeout(resolve, 5000));
  }
}

function renderSteps(tbody, steps) {
  tbody.replaceChildren(...steps.map((step) => {
    const row = document.createElement("tr");
    const cells = [step.seq, step.name, null, step.message];
    cells.forEach((value, index) => {
      const cell = document.createElement("td");
      if (index === 2) {
        const pill = document.createElement("span");
        setPill(pill, step.status, step.status);
        cell.appendChild(pill);
      } else {
        cell.textContent = value;
      }
      if (index === 3) cell.className = "wrap";
      row.appendChild(cell);
    });
    return row;
  }));
}

async function followOperation(el) {
  const id = el.dataset.operation;
  for (;;) {
    let operation;
    try {
      const response = await fetch("/api/operations/" + id, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      operation = await response.json();
    } catch (error) {
      return;
    }
    const status = el.querySelector("[data-op-status]");
    if (status) setPill(status, operation.status, operation.status);
    const summary = el.querySelector("[data-op-summary]");
    if (summary) summary.textContent = operation.summary;
    const finished = el.querySelector("[data-op-finished]");
    if (finished && operation.finished_at) finished.textContent = operation.finished_at.replace("T", " ").slice(0, 19);
    const steps = el.querySelector("[data-op-steps]");
    if (steps) renderSteps(steps, operation.steps);
    if (operation.status !== "running" && operation.status !== "pending") {
      el.dataset.finished = "true";
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 700));
  }
}

function minutes(seconds) {
  return seconds >= 120 ? Math.round(seconds / 60) + " min" : Math.round(seconds) + " s";
}

async function followUps(tile) {
  for (;;) {
    try {
      const response = await fetch("/api/ups/" + tile.dataset.upsStatus + "/status", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const status = await response.json();
      const words = tile.querySelector("[data-ups-field=words]");
      if (words) {
        const text = !status.reachable ? "unreachable" : (status.status_words || []).join(", ");
        setPill(words, text, status.on_battery ? "bad" : status.reachable ? "ok" : "");
      }
      for (const name of ["battery_charge", "battery_runtime", "ups_load"]) {
        const known = status[name] !== null && status[name] !== undefined;
        const cell = tile.querySelector("[data-ups-field=" + name + "]");
        if (cell) cell.textContent = known ? (name === "battery_runtime" ? minutes(status[name]) : status[name]) : "—";
        const meter = tile.querySelector("meter[data-ups-meter=" + name + "]");
        if (meter) meter.value = known ? status[name] : 0;
      }
    } catch (error) {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// The lab page (mko serve --lab): nodes, UPS and what mko is doing, refreshed every second.
function labOperationItem(op) {
  const item = document.createElement("li");
  const link = document.createElement("a");
  link.href = "/operations/" + op.id;
  link.textContent = op.kind + " #" + op.id;
  const pill = document.createElement("span");
  setPill(pill, op.status, op.status);
  item.append(link, " ", pill, " " + op.summary);
  return item;
}

async function followLab(root) {
  for (;;) {
    try {
      const response = await fetch("/api/lab", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const lab = await response.json();
      for (const node of lab.nodes) {
        const row = root.querySelector("[data-lab-node='" + node.hostname + "']");
        if (!row) continue;
        setPill(row.querySelector("[data-field=power]"), node.power, node.power === "on" ? "up" : "down");
        setPill(row.querySelector("[data-field=ready]"), node.ready ? "Ready" : "NotReady", node.ready ? "up" : "down");
        row.querySelector("[data-field=microk8s]").textContent = node.microk8s;
        row.querySelector("[data-field=cordoned]").textContent = node.cordoned ? "yes" : "no";
        row.querySelector("[data-field=boots]").textContent = node.boots;
      }
      const ups = lab.ups;
      const onBattery = (ups.status || "").split(" ").includes("OB");
      setPill(root.querySelector("[data-lab-ups=status]"), ups.status || "unreachable", onBattery ? "bad" : "ok");
      root.querySelector("[data-lab-ups=charge]").textContent = ups.charge;
      root.querySelector("[data-lab-ups=runtime]").textContent = ups.runtime;
      root.querySelector("[data-lab-ups=flap]").textContent = lab.flap ? " · flapping" : "";
      root.querySelector("[data-lab-ups=output]").textContent = ups.output || "on";
      const running = root.querySelector("[data-lab-running]");
      running.replaceChildren(...(lab.running.length ? lab.running.map(labOperationItem) : [Object.assign(document.createElement("span"), { className: "muted", textContent: "nothing" })]));
      const latest = root.querySelector("[data-lab-operations]");
      if (lab.operations.length) latest.replaceChildren(...lab.operations.map(labOperationItem));
    } catch (error) {
      /* the server went away (lab down): stop refreshing */
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// The dashboard's operations, live without a reload: what is running now (its summary says how far it
// got, e.g. a recovery's "waiting for Ready: 2/3 Ready") and the latest ten, from one light request.
function element(tag, text, className) {
  const el = document.createElement(tag);
  if (text !== undefined && text !== null) el.textContent = text;
  if (className) el.className = className;
  return el;
}

function operationLink(op, text) {
  const link = element("a", text);
  link.href = "/operations/" + op.id;
  return link;
}

function statusPill(status) {
  const pill = element("span");
  setPill(pill, status, status);
  return pill;
}

function target(op) {
  return op.target_type + " " + (op.target_id === null ? "" : op.target_id);
}

function when(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

function runningItem(op) {
  const item = element("li");
  item.dataset.runningOperation = op.id;
  const since = op.started_at ? Math.max(0, Math.round((Date.now() - Date.parse(op.started_at)) / 1000)) : null;
  const about = target(op) + " · " + op.actor + (since === null ? "" : " · for " + minutes(since));
  item.append(operationLink(op, op.kind + " #" + op.id), " ", statusPill(op.status), " ", element("span", about, "muted"));
  item.appendChild(element("div", op.summary, "wrap"));
  return item;
}

function operationsTable(ops) {
  const table = element("table");
  const head = element("tr");
  for (const [name, narrow] of [["#"], ["What"], ["Target", 1], ["Who", 1], ["Status"], ["Summary"], ["When", 1]]) {
    head.appendChild(element("th", name, narrow ? "hide-narrow" : ""));
  }
  table.appendChild(head);
  for (const op of ops) {
    const row = element("tr");
    const first = element("td");
    first.appendChild(operationLink(op, String(op.id)));
    const status = element("td");
    status.appendChild(statusPill(op.status));
    row.append(first, element("td", op.kind), element("td", target(op), "hide-narrow"), element("td", op.actor, "hide-narrow"),
      status, element("td", op.summary, "wrap"), element("td", when(op.created_at), "hide-narrow muted"));
    table.appendChild(row);
  }
  const scroll = element("div", null, "scroll");
  scroll.appendChild(table);
  return scroll;
}

async function followDashboardOperations(card) {
  const list = card.querySelector("[data-running-operations]");
  const latest = document.querySelector("[data-operations-table]");
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 1500));
    try {
      const answers = await Promise.all(["status=running&status=pending", "limit=10"].map((query) =>
        fetch("/api/operations/brief?" + query, { headers: { Accept: "application/json" } })));
      if (!answers.every((answer) => answer.ok)) return;
      const [running, ops] = await Promise.all(answers.map((answer) => answer.json()));
      list.replaceChildren(...running.map(runningItem));
      card.hidden = running.length === 0;
      if (latest && ops.length) latest.replaceChildren(operationsTable(ops));
    } catch (error) {
      return; /* the page still shows what it had */
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-lab-live]").forEach(followLab);
  document.querySelectorAll("[data-running-card]").forEach(followDashboardOperations);
  document.querySelectorAll("[data-ups-status]").forEach(followUps);
  document.querySelectorAll("[data-reachability]").forEach(fillReachability);
  document.querySelectorAll("[data-operation][data-running='true']").forEach(followOperation);
  // Behaviour the templates ask for by attribute (no inline handlers: the CSP forbids them).
  document.querySelectorAll("[data-menu-toggle]").forEach((button) => {
    button.addEventListener("click", () => {
      const header = button.closest("header");
      const open = !header.hasAttribute("data-menu-open");
      header.toggleAttribute("data-menu-open", open);
      button.setAttribute("aria-expanded", String(open));
    });
  });
  document.querySelectorAll("[data-theme-toggle]").forEach((button) => {
    button.addEventListener("click", () => {
      const root = document.documentElement;
      const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      try { localStorage.setItem("mko-theme", root.dataset.theme); } catch (error) { /* not remembered */ }
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  document.querySelectorAll("input[data-select-all]").forEach((box) => {
    box.addEventListener("change", () => {
      document.querySelectorAll("input[name='node_id']").forEach((item) => { item.checked = box.checked; });
    });
  });
  // The settings of the chosen power method only (the fields come from the drivers' models).
  const method = document.querySelector("select[name='wol_method']");
  if (method) {
    method.addEventListener("change", () => {
      document.querySelectorAll("#power-fields [data-methods]").forEach((el) => {
        el.hidden = !el.dataset.methods.split(" ").includes(method.value);
      });
    });
  }
  document.querySelectorAll("input[name='kind']").forEach((radio) => {
    radio.addEventListener("change", () => {
      const virtual = document.querySelector("input[name='kind'][value='virtual']").checked;
      document.querySelectorAll("[data-virtual-only]").forEach((el) => { el.hidden = !virtual; });
      document.querySelectorAll("[data-physical-only]").forEach((el) => { el.hidden = virtual; });
    });
  });
});
