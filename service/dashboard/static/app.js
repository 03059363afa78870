// hpo dashboard: fetches JSON from /api/v1/dashboard and draws it.
// Rules: figures come ready-made from the server (Plotly JSON); every string
// from the server goes into the page through textContent, never innerHTML.
// Live updates poll a cheap version endpoint and refetch only what changed.
"use strict";

(() => {
  const body = document.body;
  const API = body.dataset.api;
  const PREFIX = body.dataset.prefix;
  const POLL_MS = Number(body.dataset.pollMs) || 3000;
  const PLOT_CONFIG = { responsive: true, displaylogo: false };
  // plotly.min.js is a deferred script after this one: wait for it before drawing,
  // but start fetching figures at once so that both happen at the same time.
  // (A deferred script runs while readyState is already "interactive", before
  // DOMContentLoaded: only "complete" means the later deferred scripts have run.)
  const plotlyReady = new Promise((resolve) => {
    if (document.readyState === "complete") resolve();
    else document.addEventListener("DOMContentLoaded", resolve);
  });
  let firstChartMarked = false;

  // Chart requests go out one at a time until the first answer, then two at a
  // time: the server's CPU goes to the chart on top of the page first.
  class Loader {
    constructor() { this.active = 0; this.limit = 1; this.queue = []; }
    add(fn) {
      return new Promise((resolve, reject) => { this.queue.push({ fn, resolve, reject }); this.pump(); });
    }
    pump() {
      while (this.active < this.limit && this.queue.length) {
        const job = this.queue.shift();
        this.active += 1;
        job.fn().then(job.resolve, job.reject).finally(() => { this.active -= 1; this.limit = 2; this.pump(); });
      }
    }
  }
  const loader = new Loader();

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      const abs = Math.abs(value);
      return abs !== 0 && (abs < 1e-3 || abs >= 1e5) ? value.toExponential(2) : value.toPrecision(4);
    }
    return String(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function ago(iso) {
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    return seconds < 90 ? `${Math.round(seconds)} s ago` : `${duration(seconds)} ago`;
  }

  function setLive(ok) {
    const live = document.getElementById("live");
    if (live) live.className = ok ? "live ok" : "live stale";
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign(`${PREFIX}/login?next=${encodeURIComponent(window.location.pathname)}`);
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(`${response.status} ${url}`);
    return response.json();
  }

  function every(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (!document.hidden) {
        try { await fn(); setLive(true); } catch (err) { setLive(false); }
      }
      timer = window.setTimeout(tick, ms);
    };
    timer = window.setTimeout(tick, ms);
    return () => window.clearTimeout(timer);
  }

  const trialUrl = (studyId, number) => `${PREFIX}/studies/${encodeURIComponent(studyId)}/trials/${encodeURIComponent(number)}`;

  // ------------------------------------------------------------------ charts

  function showChart(section, data, studyId) {
    const plot = section.querySelector(".plot");
    section.querySelector(".note").textContent = data.note || "";
    section.dataset.version = data.version;
    plot.removeAttribute("aria-busy");
    if (!data.figure) {
      if (plot.dataset.plotted) window.Plotly.purge(plot);
      delete plot.dataset.plotted;
      plot.replaceChildren(el("p", { class: "empty" }, data.message || "Nothing to show yet."));
      return Promise.resolve();
    }
    if (!plot.dataset.plotted) plot.replaceChildren();
    const layout = Object.assign({ autosize: true }, data.figure.layout);
    return window.Plotly.react(plot, data.figure.data, layout, PLOT_CONFIG).then(() => {
      if (!firstChartMarked) { firstChartMarked = true; performance.mark("hpo:first-chart"); }
      if (plot.dataset.plotted || studyId === undefined) { plot.dataset.plotted = "1"; return; }
      plot.dataset.plotted = "1";
      plot.on("plotly_click", (event) => {
        const number = event.points && event.points[0] && event.points[0].customdata;
        if (Number.isInteger(number)) window.location.assign(trialUrl(studyId, number));
      });
    });
  }

  function chartError(section, err) {
    const plot = section.querySelector(".plot");
    plot.removeAttribute("aria-busy");
    if (!plot.dataset.plotted) plot.replaceChildren(el("p", { class: "error" }, `Could not load: ${err.message}`));
  }

  function whenVisible(sections, load) {
    if (!("IntersectionObserver" in window)) { sections.forEach(load); return; }
    const observer = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); load(entry.target); }
      }
    }, { rootMargin: "300px" });
    sections.forEach((s) => observer.observe(s));
  }

  // ------------------------------------------------------------------ learning curves (delta)

  function curveTrace(plot, row) {
    let trace = plot.data.find((t) => t.meta && t.meta.key === row.key);
    if (trace) return trace;
    trace = {
      type: "scatter", mode: "lines", x: [], y: [], customdata: [], text: [], name: row.name,
      meta: { key: row.key, color: row.color }, line: { color: row.color, width: 1 }, opacity: 0.75,
      connectgaps: false, hovertemplate: "epoch %{x}: %{y:.4f}<br>%{text}<extra></extra>",
    };
    const firstMark = plot.data.findIndex((t) => t.meta && t.meta.mark);
    plot.data.splice(firstMark < 0 ? plot.data.length : firstMark, 0, trace);
    return trace;
  }

  function addCurvePoint(plot, row) {
    const trace = curveTrace(plot, row);
    for (const key of ["x", "y", "customdata", "text"]) if (!Array.isArray(trace[key])) trace[key] = Array.from(trace[key] || []);
    const numbers = trace.customdata;
    const last = numbers.lastIndexOf(row.number);
    const values = { x: row.epoch, y: row.y, customdata: row.number, text: row.text };
    if (last < 0) {
      if (numbers.length) for (const key of Object.keys(values)) trace[key].push(null);
      for (const [key, value] of Object.entries(values)) trace[key].push(value);
    } else {
      for (const [key, value] of Object.entries(values)) trace[key].splice(last + 1, 0, value);
    }
  }

  function markEnded(plot, ended) {
    const mark = plot.data.find((t) => t.meta && t.meta.mark === ended.state);
    if (!mark) return;
    for (const key of ["x", "y", "customdata"]) if (!Array.isArray(mark[key])) mark[key] = Array.from(mark[key] || []);
    if (mark.customdata.includes(ended.number)) return;
    for (const trace of plot.data) {
      if (!trace.meta || trace.meta.mark || !trace.customdata) continue;
      const i = Array.from(trace.customdata).lastIndexOf(ended.number);
      if (i >= 0) {
        mark.x.push(trace.x[i]); mark.y.push(trace.y[i]); mark.customdata.push(ended.number);
        return;
      }
    }
  }

  // ------------------------------------------------------------------ study page

  class TrialsTable {
    constructor(studyId) {
      this.studyId = studyId;
      this.query = { state: "", optimizer: "", sort: "number", order: "desc", offset: 0, limit: 25 };
      this.form = document.getElementById("trial-filters");
      this.form.addEventListener("change", () => {
        const data = new FormData(this.form);
        this.query.state = data.get("state") || "";
        this.query.optimizer = data.get("optimizer") || "";
        this.query.limit = Number(data.get("limit")) || 25;
        this.query.offset = 0;
        this.load();
      });
      document.getElementById("prev-page").addEventListener("click", () => this.move(-1));
      document.getElementById("next-page").addEventListener("click", () => this.move(1));
    }

    move(direction) {
      const next = this.query.offset + direction * this.query.limit;
      if (next < 0 || (this.total !== undefined && next >= this.total)) return;
      this.query.offset = next;
      this.load();
    }

    async load() {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(this.query)) if (value !== "") params.set(key, value);
      const data = await getJSON(`${API}/studies/${this.studyId}/trials?${params}`);
      this.total = data.total;
      this.render(data);
    }

    sortBy(key) {
      if (this.query.sort === key) this.query.order = this.query.order === "asc" ? "desc" : "asc";
      else { this.query.sort = key; this.query.order = key === "number" ? "desc" : "asc"; }
      this.query.offset = 0;
      this.load();
    }

    header(columns) {
      const spec = [["number", "#"], ["state", "state"], ["value", "value"],
        ...columns.map((c) => [c, c]), ["duration", "duration"], [null, "epochs"], [null, "worker"], [null, "diagnosis"]];
      const cells = spec.map(([key, label]) => {
        if (!key) return el("th", {}, label);
        const active = this.query.sort === key;
        const arrow = active ? (this.query.order === "asc" ? " ▲" : " ▼") : "";
        return el("th", { "aria-sort": active ? (this.query.order === "asc" ? "ascending" : "descending") : null },
          el("button", { type: "button", class: "sort", on: { click: () => this.sortBy(key) } }, label + arrow));
      });
      document.getElementById("trials-head").replaceChildren(...cells);
    }

    render(data) {
      this.header(data.columns);
      const rows = data.rows.map((r) => el("tr", {},
        el("td", { class: "num" }, el("a", { href: trialUrl(this.studyId, r.number) }, `#${r.number}`)),
        el("td", {}, el("span", { class: `badge state-${r.state.toLowerCase()}` }, r.state.toLowerCase())),
        el("td", { class: "num" }, fmt(r.value)),
        ...data.columns.map((c) => el("td", { class: typeof r.settings[c] === "number" ? "num" : null }, fmt(r.settings[c]))),
        el("td", { class: "num" }, duration(r.duration_s)),
        el("td", { class: "num" }, fmt(r.epochs)),
        el("td", {}, r.worker || "—"),
        el("td", { class: "diag" }, r.diagnosis || "")));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: data.columns.length + 7, class: "empty" }, "No trial matches.")));
      document.getElementById("trials-body").replaceChildren(...rows);
      const first = data.total ? data.offset + 1 : 0;
      document.getElementById("page-info").textContent = `${first}–${data.offset + data.rows.length} of ${data.total}`;
    }
  }

  class StudyPage {
    constructor(studyId) {
      this.studyId = studyId;
      this.sections = Array.from(document.querySelectorAll("[data-chart]"));
      this.loaded = new Set();
      this.cursor = null;
      this.running = new Set();
      this.last = null;
      this.pending = new Map();
    }

    prefetch(count) {
      for (const section of this.sections.slice(0, count)) this.pending.set(section, this.fetchChart(section));
    }

    fetchChart(section) {
      return loader.add(() => getJSON(`${API}/studies/${this.studyId}/charts/${section.dataset.chart}`));
    }

    start() {
      this.table = new TrialsTable(this.studyId);
      whenVisible(this.sections, (section) => this.loadChart(section));
      this.table.load().catch(() => setLive(false));
      every(POLL_MS, () => this.poll());
    }

    async loadChart(section) {
      const name = section.dataset.chart;
      try {
        const pending = this.pending.get(section);
        this.pending.delete(section);
        const data = await (pending || this.fetchChart(section));
        await plotlyReady;
        if (name === "curves") { this.cursor = data.cursor ?? null; this.running = new Set(data.running || []); }
        this.loaded.add(section);
        await showChart(section, data, this.studyId);
      } catch (err) { chartError(section, err); }
    }

    async poll() {
      const v = await getJSON(`${API}/studies/${this.studyId}/version`);
      this.updateSummary(v);
      const changed = this.last && v.trials !== this.last.trials;
      for (const section of this.loaded) {
        if (section.dataset.chart !== "curves" && section.dataset.version !== v.trials) await this.loadChart(section);
      }
      if (this.cursor !== null && (v.metrics > this.cursor || (changed && this.running.size))) await this.curvesDelta();
      if (changed || (this.last && v.service !== this.last.service) || (this.last && v.metrics !== this.last.metrics)) await this.table.load();
      this.last = v;
    }

    updateSummary(v) {
      for (const node of document.querySelectorAll("[data-count]")) node.textContent = String(v.counts[node.dataset.count] || 0);
    }

    async curvesDelta() {
      const section = this.sections.find((s) => s.dataset.chart === "curves");
      const plot = section && section.querySelector(".plot");
      const watch = Array.from(this.running).join(",");
      const d = await getJSON(`${API}/studies/${this.studyId}/curves?since=${this.cursor}&watch=${watch}`);
      if (d.reset || !plot || !plot.dataset.plotted) {
        if (d.reset || d.rows.length) await this.loadChart(section);
        return;
      }
      d.rows.forEach((row) => addCurvePoint(plot, row));
      d.ended.forEach((ended) => { markEnded(plot, ended); this.running.delete(ended.number); });
      d.running.forEach((n) => this.running.add(n));
      this.cursor = d.cursor;
      if (d.rows.length || d.ended.length) {
        plot.layout.datarevision = (plot.layout.datarevision || 0) + 1;
        await window.Plotly.react(plot, plot.data, plot.layout, PLOT_CONFIG);
      }
    }
  }

  // ------------------------------------------------------------------ studies page

  function studiesPage() {
    const selected = new Set();
    const button = document.getElementById("compare-button");
    const sync = () => {
      document.getElementById("compare-ids").value = Array.from(selected).join(",");
      button.disabled = selected.size < 2;
    };
    const row = (s) => {
      const box = el("input", { type: "checkbox", "aria-label": `compare ${s.name}`, on: { change: (e) => {
        if (e.target.checked) selected.add(s.study_id); else selected.delete(s.study_id); sync(); } } });
      box.checked = selected.has(s.study_id);
      const best = s.best ? Object.entries(s.best.settings).map(([k, v]) => `${k}=${fmt(v)}`).join(", ") : "";
      return el("tr", {},
        el("td", {}, box),
        el("td", {}, el("a", { href: `${PREFIX}/studies/${encodeURIComponent(s.study_id)}` }, s.name)),
        el("td", {}, el("span", { class: `badge state-${s.run_state}` }, s.run_state)),
        el("td", {}, s.sampler),
        el("td", { class: "num" }, s.counts.COMPLETE), el("td", { class: "num" }, s.counts.PRUNED),
        el("td", { class: "num" }, s.counts.FAIL), el("td", { class: "num" }, s.counts.RUNNING),
        el("td", { class: "num" }, s.best ? el("a", { href: trialUrl(s.study_id, s.best.number) }, fmt(s.best.value)) : "—"),
        el("td", { class: "settings-cell" }, best),
        el("td", {}, s.workers.length ? s.workers.join(", ") : "—"));
    };
    const load = async () => {
      const studies = await getJSON(`${API}/studies`);
      document.getElementById("studies-body").replaceChildren(...studies.map(row));
      document.getElementById("studies-empty").hidden = studies.length > 0;
    };
    load().then(() => setLive(true), () => setLive(false));
    every(POLL_MS * 2, load);
  }

  // ------------------------------------------------------------------ workers page

  function workersPage() {
    const row = (w) => el("tr", { class: w.alive ? "" : "gone" },
      el("td", {}, w.name, w.alive ? null : el("span", { class: "badge state-fail" }, "gone")),
      el("td", {}, w.hostname),
      el("td", {}, w.devices.join(", ") || "—"),
      el("td", {}, w.trial ? el("a", { href: trialUrl(w.trial.study_id, w.trial.number) }, `${w.trial.study} #${w.trial.number}`) : "idle"),
      el("td", { title: w.last_seen }, ago(w.last_seen)),
      el("td", { class: "num" }, w.samples_per_s === null ? "—" : Math.round(w.samples_per_s).toLocaleString()),
      el("td", { class: "num" }, w.peak_memory_mb === null ? "—" : Math.round(w.peak_memory_mb).toLocaleString()),
      el("td", { class: "num" }, w.recent_trials),
      el("td", {}, w.version || "—"));
    const load = async () => {
      const workers = await getJSON(`${API}/workers`);
      document.getElementById("workers-body").replaceChildren(...workers.map(row));
      document.getElementById("workers-empty").hidden = workers.length > 0;
    };
    load().then(() => setLive(true), () => setLive(false));
    every(POLL_MS, load);
  }

  // ------------------------------------------------------------------ trial and compare pages

  function trialPage() {
    const section = document.querySelector("[data-trial-chart]");
    const url = `${API}/studies/${body.dataset.studyId}/trials/${body.dataset.trial}/chart`;
    getJSON(url).then((data) => showChart(section, data)).catch((err) => chartError(section, err));
  }

  function comparePage() {
    const ids = body.dataset.ids;
    for (const section of document.querySelectorAll("[data-compare]")) {
      getJSON(`${API}/compare/${section.dataset.compare}?ids=${ids}`)
        .then((data) => showChart(section, data)).catch((err) => chartError(section, err));
    }
  }

  let study = null;
  if (body.dataset.page === "study") {
    study = new StudyPage(body.dataset.studyId);
    study.prefetch(2);
  }
  const pages = {
    study: () => study.start(),
    studies: studiesPage,
    workers: workersPage,
    trial: trialPage,
    compare: comparePage,
  };
  const page = pages[body.dataset.page];
  if (page) plotlyReady.then(page);
})();
