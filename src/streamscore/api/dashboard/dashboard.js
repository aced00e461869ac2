// streamscore dashboard: live figures over server-sent events (or polling), charts by uPlot.
"use strict";
(() => {
  const $ = (selector) => document.querySelector(selector);
  const KEEP = 600; // samples (one per second)
  const state = { samples: [], medians: { edges: [], counts: [] }, sim: null, models: null, drift: null, lastT: 0 };

  // -- formatting ------------------------------------------------------------------------
  const dash = "–";
  const int = (n) => (n == null ? dash : Math.round(n).toLocaleString("en-US"));
  const num = (n, digits = 4) => (n == null ? dash : Number(n).toPrecision(digits));
  const ms = (n) => (n == null ? dash : `${Number(n).toFixed(n < 10 ? 2 : 1)} ms`);

  // -- API key (only needed when the service has keys) -----------------------------------
  const keyInput = $("#api-key");
  keyInput.value = sessionStorage.getItem("streamscore-key") || "";
  $("#key-form").addEventListener("submit", (event) => event.preventDefault());
  keyInput.addEventListener("change", () => {
    sessionStorage.setItem("streamscore-key", keyInput.value.trim());
    connect();
  });
  const headers = (extra = {}) => {
    const key = keyInput.value.trim();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  };

  // -- charts ----------------------------------------------------------------------------
  const palette = ["#0b57d0", "#a4161a", "#137333"];
  const charts = {};

  function makeChart(id, series, options = {}) {
    const el = document.getElementById(id);
    const plot = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: 200,
        series: [{}, ...series.map((s, i) => ({ stroke: palette[i], width: 2, ...s }))],
        axes: options.axes || [{}, { size: 64 }],
        scales: options.scales,
        hooks: options.hooks,
        legend: { show: true },
      },
      [[], ...series.map(() => [])],
      el,
    );
    const empty = document.createElement("div");
    empty.className = "no-data";
    empty.textContent = options.emptyText || "No data yet";
    el.appendChild(empty);
    new ResizeObserver(() => plot.setSize({ width: Math.max(200, el.clientWidth), height: 200 })).observe(el);
    charts[id] = { plot, empty };
    return plot;
  }

  function setChart(id, data, hasData) {
    charts[id].plot.setData(data);
    charts[id].empty.hidden = hasData;
  }

  // Drift change points as vertical marks on the throughput chart's time axis.
  function markChanges(u) {
    const points = (state.drift && state.drift.change_points) || [];
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = "#b06000";
    ctx.lineWidth = 2;
    for (const p of points) {
      const x = u.valToPos(p.time, "x", true);
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  }
  makeChart("chart-throughput", [{ label: "events/s" }], { hooks: { draw: [markChanges] } });
  makeChart("chart-latency", [{ label: "p50 ms" }, { label: "p99 ms" }]);
  makeChart(
    "chart-batch",
    [
      { label: "mean batch", scale: "n" },
      { label: "cost per 1M events ($)", scale: "usd" },
    ],
    {
      axes: [
        {},
        { scale: "n", label: "events", size: 64 },
        {
          scale: "usd",
          side: 1,
          label: "$",
          size: 64,
          grid: { show: false },
          values: (u, ticks) => ticks.map((v) => v.toPrecision(2)),
        },
      ],
    },
  );
  makeChart(
    "chart-medians",
    [{ label: "users", fill: "#0b57d055", paths: uPlot.paths.bars({ size: [0.9] }), points: { show: false } }],
    { scales: { x: { time: false } }, axes: [{ label: "median score" }, { label: "users", size: 64 }] },
  );
  makeChart("chart-user", [{ label: "score", width: 0, points: { show: true, size: 5 } }], {
    emptyText: "Look up a user to see their history",
  });

  // -- rendering -------------------------------------------------------------------------
  function setStat(name, text) {
    document.querySelector(`[data-stat="${name}"]`).textContent = text;
  }

  function render() {
    const s = state.samples;
    const last = s[s.length - 1];
    const anything = s.some((x) => x.events > 0);
    $("#empty").hidden = anything || !last;
    if (last) {
      setStat("events_per_second", int(last.events_per_second));
      setStat("events", int(last.events));
      setStat("users", int(last.users));
      setStat("median_of_medians", num(last.median_of_medians));
      setStat("ingest_latency", `${ms(last.ingest_p50_ms)} / ${ms(last.ingest_p99_ms)}`);
      setStat("anomalies", `${int(last.rejected)} / ${int(last.late)} / ${int(last.duplicates)}`);
      setStat("batch", `${int(last.batch_mean)} / ${int(last.batch_target)}`);
      setStat("cost", last.cost_per_event == null ? dash : `$${num(last.cost_per_event * 1e6, 3)}`);
    }
    const t = s.map((x) => x.t);
    setChart("chart-throughput", [t, s.map((x) => x.events_per_second)], anything);
    setChart("chart-latency", [t, s.map((x) => x.ingest_p50_ms), s.map((x) => x.ingest_p99_ms)], anything);
    setChart(
      "chart-batch",
      [t, s.map((x) => x.batch_mean), s.map((x) => (x.cost_per_event == null ? null : x.cost_per_event * 1e6))],
      anything,
    );
    const { edges, counts } = state.medians;
    const centers = counts.map((_, i) => (edges[i] + edges[i + 1]) / 2);
    setChart("chart-medians", [centers, counts], counts.length > 0);
    renderSimulator();
    renderModels();
    renderDrift();
  }

  function renderDrift() {
    const d = state.drift;
    const measured = d ? d.values.filter((v) => v.psi != null) : [];
    $("#drift-empty").hidden = measured.length > 0;
    $("#drift").hidden = measured.length === 0;
    $("#drift tbody").replaceChildren(
      ...measured.map((v) => {
        const row = document.createElement("tr");
        const stateText = v.drifted ? "drifted" : "ok";
        for (const text of [v.name, num(v.psi), stateText]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        row.dataset.drifted = String(v.drifted);
        return row;
      }),
    );
  }

  function renderModels() {
    const m = state.models;
    if (!m) return;
    setStat("active_model", m.active || dash);
    const swap = m.last_swap;
    setStat("last_swap", swap ? `${ms(swap.pause_seconds * 1e3)} / ${int(swap.rescored_events)}` : dash);
    const sh = m.shadow;
    setStat("shadow_version", sh ? sh.version : "none");
    setStat("shadow_fit", sh ? `${num(sh.correlation)} / ${num(sh.mean_abs_difference)}` : dash);
    setStat(
      "shadow_p99",
      sh && sh.primary_p99_seconds != null
        ? `${ms(sh.primary_p99_seconds * 1e3)} / ${ms(sh.shadow_p99_seconds * 1e3)}`
        : dash,
    );
    const exp = m.experiment;
    const table = $("#experiment");
    table.hidden = !exp;
    if (!exp) return;
    $("#experiment-caption").textContent = `Experiment ${exp.name} (${exp.status})`;
    const body = table.querySelector("tbody");
    body.replaceChildren(
      ...exp.variants.map((v) => {
        const row = document.createElement("tr");
        const rate =
          v.conversion_rate == null
            ? dash
            : `${num(100 * v.conversion_rate)} % [${num(100 * v.interval[0])}, ${num(100 * v.interval[1])}]`;
        for (const text of [v.name, v.model, int(v.users), int(v.events), int(v.conversions), rate]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }),
    );
    $("#experiment-decision").textContent = exp.decision;
  }

  function renderSimulator() {
    const sim = state.sim;
    const running = Boolean(sim && sim.running);
    $("#sim-start").disabled = running;
    $("#sim-stop").disabled = !running;
    if (!sim || sim.started_at == null) return;
    if (running) {
      // Show the running run's parameters (started here or elsewhere), unless being edited.
      for (const name of ["rps", "duration_s", "users", "late_fraction"]) {
        const input = document.querySelector(`#simulator [name="${name}"]`);
        if (document.activeElement !== input) input.value = sim[name];
      }
    }
    const progress =
      `${int(sim.sent_events)} events sent (${int(sim.processed_events)} processed, ` +
      `${int(sim.late_events)} late), ${int(sim.achieved_rps)} events/s over ${sim.elapsed_s.toFixed(0)} s`;
    const refused = sim.refused_requests ? `; ${int(sim.refused_requests)} requests refused (${sim.last_error})` : "";
    $("#sim-status").textContent = running
      ? `Running at ${int(sim.rps)} events/s for ${int(sim.duration_s)} s: ${progress}${refused}.`
      : `Stopped (${sim.stopped_by || "ended"}): ${progress}${refused}.`;
  }

  function accept(message) {
    for (const sample of message.samples || []) {
      if (sample.t > state.lastT) {
        state.samples.push(sample);
        state.lastT = sample.t;
      }
    }
    if (state.samples.length > KEEP) state.samples.splice(0, state.samples.length - KEEP);
    if (message.medians) state.medians = message.medians;
    if (message.simulator) state.sim = message.simulator;
    if (message.models) state.models = message.models;
    if (message.drift) state.drift = message.drift;
    render();
  }

  // -- live updates: server-sent events, polling when a key is needed or SSE fails ---------
  let source = null;
  let poller = null;
  const connection = $("#connection");

  function connect() {
    if (source) source.close();
    if (poller) clearInterval(poller);
    source = poller = null;
    if (keyInput.value.trim() || !window.EventSource) return poll();
    source = new EventSource("/dashboard/stream");
    let failures = 0;
    source.addEventListener("snapshot", (event) => {
      failures = 0;
      connection.textContent = "live (server-sent events)";
      accept(JSON.parse(event.data));
    });
    source.onerror = () => {
      connection.textContent = "reconnecting…";
      if (++failures >= 3) poll();
    };
  }

  function poll() {
    if (source) source.close();
    source = null;
    const tick = async () => {
      try {
        const response = await fetch(`/dashboard/snapshot?since=${state.lastT}`, { headers: headers() });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        connection.textContent = "live (polling every second)";
        accept(await response.json());
      } catch (error) {
        connection.textContent = `cannot reach the service: ${error.message}`;
      }
    };
    tick();
    poller = setInterval(tick, 1000);
  }

  // -- user lookup ---------------------------------------------------------------------------
  $("#lookup").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("#user-id").value.trim();
    const out = $("#user-result");
    if (!user) return;
    out.classList.remove("error");
    try {
      const id = encodeURIComponent(user);
      const median = await (await fetch(`/users/${id}/median`, { headers: headers() })).json();
      const since = median.window_end == null ? "" : `&since=${median.window_end - 600}`;
      const history = await (await fetch(`/users/${id}/history?limit=2000${since}`, { headers: headers() })).json();
      const points = history.history || [];
      out.textContent =
        median.median == null
          ? `${user}: no events in the current window (${points.length} in the last 10 minutes).`
          : `${user}: rolling median ${num(median.median, 6)} over ${int(median.count)} events in the window.`;
      out.dataset.median = median.median == null ? "" : String(median.median);
      setChart("chart-user", [points.map((p) => p.timestamp), points.map((p) => p.score)], points.length > 0);
    } catch (error) {
      out.textContent = `Lookup failed: ${error.message}`;
      out.classList.add("error");
    }
  });

  // -- simulator -----------------------------------------------------------------------------
  async function simulator(action, body) {
    const response = await fetch(`/simulator/${action}`, {
      method: "POST",
      headers: headers({ "content-type": "application/json" }),
      body: body ? JSON.stringify(body) : undefined,
    });
    const payload = await response.json();
    if (!response.ok) {
      const detail = payload.error || JSON.stringify(payload.detail || payload);
      throw new Error(detail);
    }
    state.sim = payload;
    renderSimulator();
  }

  $("#simulator").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = Object.fromEntries([...form.entries()].map(([k, v]) => [k, Number(v)]));
    try {
      await simulator("start", body);
      $("#sim-status").classList.remove("error");
    } catch (error) {
      $("#sim-status").textContent = `Could not start: ${error.message}`;
      $("#sim-status").classList.add("error");
    }
  });
  $("#sim-stop").addEventListener("click", () => simulator("stop").catch(() => {}));

  connect();
})();
