// ctx-sim view: draws a run (the JSON blob in #ctx-data, built by
// sim/src/view.rs) as a space-time diagram on one canvas. Time runs left to
// right, one lane per node. Everything drawn is also counted in
// window.ctxView.drawn, so a test can compare it with the trace.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("ctx-data").textContent);
  const canvas = document.getElementById("diagram");
  const box = document.getElementById("canvas-box");
  const tooltip = document.getElementById("tooltip");
  const details = document.getElementById("details");
  const ctx = canvas.getContext("2d");

  const LEFT = 92, TOP = 26, BOTTOM = 10, HIT_PX = 6;
  const GROUP_COLOURS = ["#f2e2b3", "#cfe3f4", "#dcefd0", "#f4d3e0", "#e3dcf4", "#f9dcc4", "#d3f0ee", "#eeeeee"];
  const state = {
    t0: 0,
    t1: Math.max(1, data.end_ms),
    context: "",
    hiddenNodes: new Set(),
    hiddenKinds: new Set(),
    layers: { messages: true, lost: true, txs: true, applications: true, marks: true, reorders: false, steps: false, roots: true, checks: true, partitions: true },
    from: null,
    to: null,
    pinned: null,
  };
  const failing = data.checks.filter((c) => !c.passed);

  // ----- static text -----------------------------------------------------
  document.getElementById("title").textContent = `${data.scenario} (seed ${data.seed})`;
  const verdict = document.getElementById("verdict");
  verdict.textContent = failing.length ? `FAILED: ${failing.map((c) => c.name).join(", ")}` : "PASSED";
  verdict.className = failing.length ? "failed" : "passed";

  const contextSelect = document.getElementById("f-context");
  data.contexts.forEach((c, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${c.name} (${c.id.slice(0, 8)})`;
    contextSelect.appendChild(option);
  });
  function checkbox(parent, label, checked, onChange, dataName) {
    const l = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.checked = checked;
    if (dataName) input.dataset.name = dataName;
    input.addEventListener("change", () => onChange(input.checked));
    l.appendChild(input);
    l.appendChild(document.createTextNode(" " + label));
    parent.appendChild(l);
  }
  data.lanes.forEach((lane) =>
    checkbox(document.getElementById("f-nodes"), lane.name, true, (on) => {
      on ? state.hiddenNodes.delete(lane.name) : state.hiddenNodes.add(lane.name);
      render();
    }, lane.name));
  data.kinds.forEach((kind) =>
    checkbox(document.getElementById("f-kinds"), kind, !state.hiddenKinds.has(kind), (on) => {
      on ? state.hiddenKinds.delete(kind) : state.hiddenKinds.add(kind);
      render();
    }, kind));
  Object.keys(state.layers).forEach((layer) =>
    checkbox(document.getElementById("f-layers"), layer, state.layers[layer], (on) => {
      state.layers[layer] = on;
      render();
    }, layer));
  contextSelect.addEventListener("change", () => { state.context = contextSelect.value; render(); });
  const fromInput = document.getElementById("f-from"), toInput = document.getElementById("f-to");
  function rangeChanged() {
    state.from = fromInput.value === "" ? null : Number(fromInput.value);
    state.to = toInput.value === "" ? null : Number(toInput.value);
    if (state.from !== null || state.to !== null) {
      state.t0 = state.from ?? 0;
      state.t1 = Math.max(state.t0 + 1, state.to ?? data.end_ms);
    }
    render();
  }
  fromInput.addEventListener("change", rangeChanged);
  toInput.addEventListener("change", rangeChanged);

  const checkList = document.getElementById("checks");
  data.checks.forEach((check, i) => {
    const li = document.createElement("li");
    li.className = check.passed ? "ok" : "fail";
    li.textContent = `${check.passed ? "ok" : "FAIL"} ${check.name} at ${fmtMs(check.at_ms)}`;
    li.dataset.check = String(i);
    li.addEventListener("click", () => { focusTime(check.at_ms); pin({ type: "check", item: check }); });
    checkList.appendChild(li);
  });

  // ----- geometry ----------------------------------------------------------
  let width = 0, height = 0, lanes = [], laneY = new Map(), laneH = 30;
  function layout() {
    const dpr = window.devicePixelRatio || 1;
    width = box.clientWidth; height = box.clientHeight;
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    lanes = data.lanes.map((lane, i) => ({ index: i, lane })).filter((l) => !state.hiddenNodes.has(l.lane.name));
    laneH = lanes.length ? Math.max(14, Math.min(80, (height - TOP - BOTTOM) / lanes.length)) : 30;
    laneY = new Map();
    lanes.forEach((l, row) => laneY.set(l.index, TOP + row * laneH + laneH / 2));
  }
  const x = (ms) => LEFT + ((ms - state.t0) / (state.t1 - state.t0)) * (width - LEFT - 8);
  const msAt = (px) => state.t0 + ((px - LEFT) / (width - LEFT - 8)) * (state.t1 - state.t0);
  const inContext = (c) => state.context === "" || c === null || c === undefined || String(c) === state.context;
  const inRange = (ms) => (state.from === null || ms >= state.from) && (state.to === null || ms <= state.to);
  function fmtMs(ms) { return ms >= 10000 ? `${(ms / 1000).toFixed(3)} s` : `${ms} ms`; }
  function rootColour(root) { return `hsl(${parseInt(root.slice(0, 6), 16) % 360}, 65%, 55%)`; }

  // ----- drawing -------------------------------------------------------------
  let hits = [];
  const drawn = { lanes: 0, arrows: 0, messages: 0, lost: 0, txs: 0, applications: 0, marks: 0, checks: 0 };

  function render() {
    layout();
    hits = [];
    for (const k in drawn) drawn[k] = 0;
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    const visibleEnd = Math.min(state.t1, data.end_ms);
    drawLanes(visibleEnd);
    // Everything in time is clipped to the right of the lane names.
    ctx.save();
    ctx.beginPath(); ctx.rect(LEFT - 6, 0, width - LEFT + 6, height); ctx.clip();
    drawPartitions();
    drawDown();
    drawLaneLines(visibleEnd);
    if (state.layers.roots) drawRoots();
    if (state.layers.messages) drawMessages();
    if (state.layers.applications) drawApplications();
    if (state.layers.txs) drawAuthored();
    if (state.layers.marks) drawMarks();
    if (state.layers.checks) drawChecks();
    ctx.restore();
    drawAxis();
    publish();
  }

  function drawAxis() {
    ctx.fillStyle = "#fbfbf8"; ctx.fillRect(0, 0, width, TOP - 6);
    ctx.strokeStyle = "#d9d6cc"; ctx.fillStyle = "#77756e";
    const span = state.t1 - state.t0, target = span / Math.max(1, (width - LEFT) / 110);
    const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 30000, 60000, 120000, 300000, 600000];
    const step = steps.find((s) => s >= target) || 600000;
    ctx.beginPath();
    for (let t = Math.ceil(state.t0 / step) * step; t <= state.t1; t += step) {
      const px = x(t);
      ctx.moveTo(px, TOP - 8); ctx.lineTo(px, TOP - 4);
      ctx.fillText(fmtMs(t), px + 2, TOP - 10);
    }
    ctx.stroke();
  }

  function drawLanes() {
    ctx.textBaseline = "middle";
    for (const l of lanes) {
      ctx.fillStyle = "#1d1d1b";
      ctx.fillText(l.lane.name, 6, laneY.get(l.index));
      drawn.lanes++;
    }
    ctx.textBaseline = "alphabetic";
  }

  function drawLaneLines(end) {
    ctx.strokeStyle = "#9c998f"; ctx.lineWidth = 1;
    ctx.beginPath();
    for (const l of lanes) {
      const y = laneY.get(l.index);
      ctx.moveTo(Math.max(LEFT, x(0)), y); ctx.lineTo(Math.max(LEFT, x(end)), y);
    }
    ctx.stroke();
  }

  function drawPartitions() {
    if (!state.layers.partitions) return;
    for (const span of data.partitions) {
      const x0 = Math.max(LEFT, x(span.from_ms)), x1 = Math.min(width, x(span.to_ms));
      if (x1 < LEFT || x0 > width) continue;
      for (const l of lanes) {
        ctx.fillStyle = GROUP_COLOURS[span.groups[l.index] % GROUP_COLOURS.length];
        ctx.fillRect(x0, laneY.get(l.index) - laneH / 2 + 1, x1 - x0, laneH - 2);
      }
      hits.push({ kind: "box", x0, x1, y0: TOP, y1: height, item: { type: "partition", item: span }, weak: true });
    }
  }

  function drawDown() {
    // Down: grey; paused (frozen, inputs held back): amber.
    for (const [spans, fill] of [[data.down, "rgba(120,120,120,0.28)"], [data.paused || [], "rgba(224,138,0,0.22)"]]) {
      ctx.fillStyle = fill;
      for (const span of spans) {
        if (!laneY.has(span.node)) continue;
        const x0 = Math.max(LEFT, x(span.from_ms)), x1 = Math.min(width, x(span.to_ms));
        if (x1 < LEFT || x0 > width) continue;
        const y = laneY.get(span.node);
        ctx.fillRect(x0, y - laneH / 2 + 2, x1 - x0, laneH - 4);
      }
    }
  }

  function drawRoots() {
    // A strip under each lane, coloured by its state root: members that
    // agree show the same colour.
    const last = new Map();
    const strip = (node, from, to, root) => {
      if (!laneY.has(node)) return;
      const x0 = Math.max(LEFT, x(from)), x1 = Math.min(width, x(to));
      if (x1 < LEFT || x0 > width) return;
      ctx.fillStyle = rootColour(root);
      ctx.fillRect(x0, laneY.get(node) + 3, Math.max(1, x1 - x0), 3);
    };
    for (const change of data.roots) {
      if (!inContext(change.context)) continue;
      const key = change.node + ":" + change.context;
      const prev = last.get(key);
      if (prev) strip(change.node, prev.at_ms, change.at_ms, prev.root);
      last.set(key, change);
    }
    for (const change of last.values()) strip(change.node, change.at_ms, data.end_ms, change.root);
  }

  function drawMessages() {
    const styles = { delivered: [], duplicate: [], slow: [], lost: [], flight: [] };
    const crosses = [];
    const slowMs = Math.max(1, data.slow_ms);
    for (const m of data.messages) {
      if (!laneY.has(m.from) || !laneY.has(m.to) || state.hiddenKinds.has(m.kind) || !inContext(m.context) || !inRange(m.sent_ms)) continue;
      const y0 = laneY.get(m.from), y1 = laneY.get(m.to), x0 = x(m.sent_ms);
      let any = false;
      for (const copy of m.copies) {
        const lost = copy.fate !== "delivered" && copy.fate !== "in-flight";
        if (lost && !state.layers.lost) continue;
        let x1, y2 = y1;
        if (copy.fate === "dropped") { x1 = x0 + Math.max(8, Math.min(40, x(m.sent_ms + slowMs / 2) - x0)); y2 = y0 + (y1 - y0) * 0.3; }
        else x1 = x(copy.at_ms);
        if (Math.max(x0, x1) < LEFT || Math.min(x0, x1) > width) continue;
        const style = lost ? "lost" : copy.fate === "in-flight" ? "flight" : copy.copy === 1 ? "duplicate" : copy.at_ms - m.sent_ms > slowMs ? "slow" : "delivered";
        styles[style].push(x0, y0, x1, y2);
        if (lost) crosses.push(x1, y2);
        hits.push({ kind: "seg", x0, y0, x1, y1: y2, item: { type: "message", item: m, copy } });
        drawn.arrows++;
        if (lost) drawn.lost++;
        any = true;
      }
      if (any) drawn.messages++;
    }
    const stroke = (list, colour, widthPx, dash) => {
      if (!list.length) return;
      ctx.strokeStyle = colour; ctx.lineWidth = widthPx; ctx.setLineDash(dash);
      ctx.beginPath();
      for (let i = 0; i < list.length; i += 4) { ctx.moveTo(list[i], list[i + 1]); ctx.lineTo(list[i + 2], list[i + 3]); }
      ctx.stroke();
      // Arrow heads when zoomed in enough to see them.
      if (list.length / 4 < 4000) {
        ctx.setLineDash([]); ctx.beginPath();
        for (let i = 0; i < list.length; i += 4) {
          const [ax, ay, bx, by] = [list[i], list[i + 1], list[i + 2], list[i + 3]];
          const angle = Math.atan2(by - ay, bx - ax);
          ctx.moveTo(bx, by); ctx.lineTo(bx - 6 * Math.cos(angle - 0.4), by - 6 * Math.sin(angle - 0.4));
          ctx.moveTo(bx, by); ctx.lineTo(bx - 6 * Math.cos(angle + 0.4), by - 6 * Math.sin(angle + 0.4));
        }
        ctx.stroke();
      }
    };
    ctx.globalAlpha = 0.75;
    stroke(styles.delivered, "#4a6fa5", 1, []);
    stroke(styles.slow, "#8e44ad", 2, []);
    stroke(styles.duplicate, "#e08a00", 1.2, []);
    stroke(styles.flight, "#888", 1, [2, 3]);
    stroke(styles.lost, "#c62828", 1.2, [4, 3]);
    ctx.setLineDash([]); ctx.globalAlpha = 1;
    ctx.strokeStyle = "#c62828"; ctx.lineWidth = 1.5; ctx.beginPath();
    for (let i = 0; i < crosses.length; i += 2) {
      const [cx, cy] = [crosses[i], crosses[i + 1]];
      ctx.moveTo(cx - 3, cy - 3); ctx.lineTo(cx + 3, cy + 3); ctx.moveTo(cx + 3, cy - 3); ctx.lineTo(cx - 3, cy + 3);
    }
    ctx.stroke();
  }

  function drawApplications() {
    ctx.fillStyle = "#2e7d32";
    for (const tx of data.txs) {
      if (!inContext(tx.context)) continue;
      for (const a of tx.applied) {
        if (!laneY.has(a.node) || !inRange(a.at_ms)) continue;
        const px = x(a.at_ms);
        if (px < LEFT || px > width) continue;
        const y = laneY.get(a.node);
        ctx.fillStyle = a.outcome === "ok" ? "#2e7d32" : "#c62828";
        ctx.fillRect(px - 0.5, y - 6, 1.5, 5);
        hits.push({ kind: "pt", x: px, y: y - 4, item: { type: "application", item: tx, application: a } });
        drawn.applications++;
      }
    }
  }

  function drawAuthored() {
    ctx.fillStyle = "#1d1d1b";
    for (const tx of data.txs) {
      if (tx.authored_ms === null || tx.author === null || !laneY.has(tx.author) || !inContext(tx.context) || !inRange(tx.authored_ms)) continue;
      const px = x(tx.authored_ms);
      if (px < LEFT || px > width) continue;
      const y = laneY.get(tx.author);
      ctx.beginPath(); ctx.arc(px, y, 3, 0, 2 * Math.PI); ctx.fill();
      hits.push({ kind: "pt", x: px, y, item: { type: "tx", item: tx } });
      drawn.txs++;
    }
  }

  const GLYPHS = {
    crash: ["✕", "#c62828"], restart: ["▶", "#2e7d32"], pause: ["⏸", "#e08a00"], clock: ["⏱", "#4a6fa5"], create: ["★", "#1d1d1b"], created: null,
    invite: ["✉", "#4a6fa5"], join: ["⇢", "#4a6fa5"], joined: ["●", "#4a6fa5"], "join-abandoned": ["⊘", "#c62828"],
    leave: ["⇠", "#8e44ad"], left: ["○", "#8e44ad"], "catchup-refused": ["↺", "#e08a00"],
    "checkpoint-loaded": ["◆", "#00838f"], "checkpoint-refused": ["◆", "#c62828"], "checkpoint-mismatch": ["◆", "#c62828"],
    "below-stable": ["!", "#c62828"], "tx-dropped": ["!", "#e08a00"], "call-failed": ["!", "#e08a00"], reordered: ["↯", "#8e44ad"],
  };
  function drawMarks() {
    ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.font = "12px system-ui, sans-serif";
    for (const mark of data.marks) {
      if (!inContext(mark.context) || !inRange(mark.at_ms)) continue;
      const px = x(mark.at_ms);
      if (px < LEFT || px > width) continue;
      if (mark.node === null) {
        if (mark.kind === "step" && !state.layers.steps) continue;
        ctx.strokeStyle = mark.kind === "partition" ? "#b8860b" : mark.kind === "heal" ? "#2e7d32" : "#aaa";
        ctx.setLineDash(mark.kind === "step" ? [1, 4] : [5, 4]); ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(px, TOP - 4); ctx.lineTo(px, height - BOTTOM); ctx.stroke(); ctx.setLineDash([]);
        if (mark.kind !== "step") { ctx.fillStyle = ctx.strokeStyle; ctx.fillText(mark.kind, px, height - 4); }
        hits.push({ kind: "vline", x: px, item: { type: "mark", item: mark }, weak: true });
      } else {
        const glyph = GLYPHS[mark.kind];
        if (!glyph || !laneY.has(mark.node) || (mark.kind === "reordered" && !state.layers.reorders)) continue;
        const y = laneY.get(mark.node) - laneH / 2 + 7;
        ctx.fillStyle = glyph[1]; ctx.fillText(glyph[0], px, Math.max(TOP, y));
        hits.push({ kind: "pt", x: px, y: Math.max(TOP, y), item: { type: "mark", item: mark } });
      }
      drawn.marks++;
    }
    ctx.textAlign = "start"; ctx.textBaseline = "alphabetic"; ctx.font = "11px system-ui, sans-serif";
  }

  function drawChecks() {
    for (const check of data.checks) {
      const px = x(check.at_ms);
      if (px < LEFT - 2 || px > width + 2) continue;
      if (!check.passed) {
        // The members it names, outlined; a band at its time.
        ctx.fillStyle = "rgba(198,40,40,0.12)"; ctx.fillRect(px - 6, TOP - 4, 12, height - TOP);
        ctx.strokeStyle = "#c62828"; ctx.lineWidth = 2;
        for (const node of check.nodes) {
          if (!laneY.has(node)) continue;
          const y = laneY.get(node);
          ctx.strokeRect(LEFT, y - laneH / 2 + 1, Math.max(0, px - LEFT), laneH - 2);
        }
      }
      ctx.strokeStyle = check.passed ? "#2e7d32" : "#c62828"; ctx.lineWidth = check.passed ? 1 : 3;
      ctx.beginPath(); ctx.moveTo(px, TOP - 4); ctx.lineTo(px, height - BOTTOM); ctx.stroke();
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(check.passed ? "✓" : "✗ " + check.name, px + 3, TOP + 8);
      hits.push({ kind: "vline", x: px, item: { type: "check", item: check } });
      drawn.checks++;
    }
  }

  // ----- details -------------------------------------------------------------
  const lane = (i) => (data.lanes[i] ? data.lanes[i].name : "?");
  const ctxName = (c) => (c === null || c === undefined ? "-" : data.contexts[c].name);
  function describe(hit) {
    const it = hit.item;
    switch (hit.type) {
      case "message": {
        const copies = it.copies.map((c) => `  copy ${c.copy}: ${c.fate} at ${fmtMs(c.at_ms)}${c.due_ms !== null && c.fate !== "delivered" && c.fate !== "in-flight" ? ` (was due ${fmtMs(c.due_ms)})` : ""}, ${c.fate === "delivered" ? `delay ${c.at_ms - it.sent_ms} ms` : ""}`).join("\n");
        const txs = it.txs.map((i) => `  ${txLine(data.txs[i])}`).join("\n");
        return `message #${it.id}: ${it.kind}${it.answers ? ` (answers a ${it.answers})` : ""}\n${lane(it.from)} → ${lane(it.to)}, context ${ctxName(it.context)}\nsent ${fmtMs(it.sent_ms)}, ${it.bytes} bytes\n${copies}\n\n${it.summary}${txs ? `\n\ntransactions:\n${txs}` : ""}`;
      }
      case "tx": return txDetails(it);
      case "application": {
        const a = hit.application;
        return `${lane(a.node)} applied ${it.id.slice(0, 16)} at ${fmtMs(a.at_ms)}\nposition ${a.position ?? "?"}, ${a.outcome}, re-executed ${a.reexecuted} times\n\n${txDetails(it)}`;
      }
      case "mark": return `${it.kind}${it.node !== null ? ` on ${lane(it.node)}` : ""} at ${fmtMs(it.at_ms)}${it.context !== null ? `, context ${ctxName(it.context)}` : ""}\n${it.detail}`;
      case "check": return `check ${it.name}: ${it.passed ? "held" : "FAILED"} at ${fmtMs(it.at_ms)}${it.line ? ` (line ${it.line})` : " (always on)"}\n${it.detail}${it.nodes.length ? `\nnames: ${it.nodes.map(lane).join(", ")}` : ""}`;
      case "partition": return `partition from ${fmtMs(it.from_ms)} to ${fmtMs(it.to_ms)}\ngroups: ${groups(it.groups)}`;
    }
    return "";
  }
  function groups(g) {
    const by = new Map();
    g.forEach((group, node) => { if (!by.has(group)) by.set(group, []); by.get(group).push(lane(node)); });
    return [...by.values()].map((names) => `[${names.join(", ")}]`).join(" ");
  }
  function txLine(tx) { return `${tx.id.slice(0, 8)} ${tx.kind} by ${tx.author === null ? "?" : lane(tx.author)}, height ${tx.height}, ${tx.input_bytes} B input`; }
  function txDetails(tx) {
    const applied = tx.applied.map((a) => `  ${lane(a.node).padEnd(10)} ${fmtMs(a.at_ms).padStart(11)}  position ${a.position ?? "?"}  ${a.outcome}${a.reexecuted ? `  re-executed ${a.reexecuted}×` : ""}`).join("\n");
    return `transaction ${tx.id}\n${tx.kind} in ${ctxName(tx.context)} by ${tx.author === null ? "?" : lane(tx.author)}${tx.authored_ms !== null ? ` at ${fmtMs(tx.authored_ms)}` : ""}\nheight ${tx.height}, ${tx.input_bytes} B input, parents [${tx.parents.join(", ")}]\napplied on ${tx.applied.length}:\n${applied}`;
  }
  function pin(hit) {
    state.pinned = hit;
    details.textContent = describe(hit);
    details.dataset.type = hit.type;
  }

  // ----- interaction -----------------------------------------------------------
  function hitAt(px, py) {
    let best = null, bestD = HIT_PX, weak = null;
    for (const h of hits) {
      let d;
      if (h.kind === "seg") d = segDistance(px, py, h.x0, h.y0, h.x1, h.y1);
      else if (h.kind === "pt") d = Math.hypot(px - h.x, py - h.y);
      else if (h.kind === "vline") d = Math.abs(px - h.x) + (h.weak ? 2 : 0);
      else if (h.kind === "box") { if (px >= h.x0 && px <= h.x1 && py >= h.y0 && py <= h.y1) weak = h; continue; }
      if (d <= bestD) { bestD = d; best = h; }
    }
    return best ? best.item : weak ? weak.item : null;
  }
  function segDistance(px, py, ax, ay, bx, by) {
    const dx = bx - ax, dy = by - ay, len = dx * dx + dy * dy;
    const t = len ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len)) : 0;
    return Math.hypot(px - (ax + t * dx), py - (ay + t * dy));
  }
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, t0: state.t0, t1: state.t1, moved: false }; });
  window.addEventListener("mouseup", (e) => {
    if (drag && !drag.moved && e.target === canvas) {
      const hit = hitAt(e.offsetX, e.offsetY);
      if (hit) pin(hit);
    }
    drag = null;
  });
  canvas.addEventListener("mousemove", (e) => {
    if (drag) {
      const dx = e.offsetX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      if (drag.moved) {
        const dt = (dx / (width - LEFT - 8)) * (drag.t1 - drag.t0);
        state.t0 = drag.t0 - dt; state.t1 = drag.t1 - dt; render();
      }
      return;
    }
    const hit = hitAt(e.offsetX, e.offsetY);
    if (!hit) { tooltip.hidden = true; return; }
    tooltip.textContent = describe(hit);
    tooltip.hidden = false;
    const left = Math.min(e.offsetX + 14, width - tooltip.offsetWidth - 4);
    const top = e.offsetY + 14 + tooltip.offsetHeight > height ? e.offsetY - tooltip.offsetHeight - 8 : e.offsetY + 14;
    tooltip.style.left = `${Math.max(0, left)}px`; tooltip.style.top = `${Math.max(0, top)}px`;
  });
  canvas.addEventListener("mouseleave", () => { tooltip.hidden = true; });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoom(e.deltaY < 0 ? 0.8 : 1.25, msAt(e.offsetX));
  }, { passive: false });
  function zoom(factor, at) {
    const t0 = at - (at - state.t0) * factor, t1 = at + (state.t1 - at) * factor;
    if (t1 - t0 < 2) return;
    state.t0 = t0; state.t1 = t1; render();
  }
  function focusTime(ms) {
    const span = Math.max(200, (state.t1 - state.t0) / 4);
    state.t0 = ms - span / 2; state.t1 = ms + span / 2; render();
  }
  document.getElementById("zoom-in").addEventListener("click", () => zoom(0.5, (state.t0 + state.t1) / 2));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(2, (state.t0 + state.t1) / 2));
  document.getElementById("zoom-fit").addEventListener("click", () => { state.t0 = 0; state.t1 = Math.max(1, data.end_ms); render(); });
  const failureButton = document.getElementById("zoom-failure");
  failureButton.disabled = failing.length === 0;
  failureButton.addEventListener("click", () => { if (failing.length) { focusTime(failing[0].at_ms); pin({ type: "check", item: failing[0] }); } });
  window.addEventListener("resize", render);

  // ----- what a test reads -----------------------------------------------------
  const stats = document.getElementById("stats");
  function publish() {
    stats.textContent = `${data.lanes.length} nodes, ${data.counts.messages} messages (${data.counts.lost} copies lost, ${data.counts.duplicates} duplicated), ${data.counts.txs} transactions, ${data.inputs} inputs; drawn: ${drawn.lanes} lanes, ${drawn.arrows} arrows`;
    stats.dataset.lanes = String(drawn.lanes);
    stats.dataset.arrows = String(drawn.arrows);
  }
  window.ctxView = {
    data,
    counts: data.counts,
    drawn,
    render,
    // The client coordinates of the middle of a drawn copy of a message.
    pointOf(id) {
      const h = hits.find((h) => h.kind === "seg" && h.item.item.id === id);
      if (!h) return null;
      const rect = canvas.getBoundingClientRect();
      return { x: rect.left + (h.x0 + h.x1) / 2, y: rect.top + (h.y0 + h.y1) / 2 };
    },
    setWindow(t0, t1) { state.t0 = t0; state.t1 = t1; render(); },
  };
  render();
  if (failing.length) pin({ type: "check", item: failing[0] });
  window.ctxView.ready = true;
  document.body.dataset.ready = "true";
})();
