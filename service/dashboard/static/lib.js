// hpo dashboard, shared helpers (window.HPO): DOM building, fetching, drawing
// Plotly figures sent by the server, and splicing learning-curve deltas in.
// Every string from the server goes into the page through textContent.
"use strict";

(() => {
  const body = document.body;
  const API = body.dataset.api;
  const PREFIX = body.dataset.prefix;
  const POLL_MS = Number(body.dataset.pollMs) || 3000;
  const PLOT_CONFIG = { responsive: true, displaylogo: false };
  // plotly.js comes in bundles per chart family (service/dashboard/bundles.py): a
  // chart's section names its family in data-bundle (default "cartesian"), and the
  // family's bundle is fetched the first time one of its charts is drawn (the study
  // page draws its charts as they scroll into view). Each family keeps its own Plotly
  // (window.Plotly stays the first one loaded); the figures are fetched meanwhile.
  const BUNDLES = JSON.parse(body.dataset.bundles || "{}");
  const DEFAULT_BUNDLE = "cartesian";
  const plotlys = new Map();
  function plotlyFor(family) {
    const name = BUNDLES[family] ? family : DEFAULT_BUNDLE;
    if (!plotlys.has(name)) {
      plotlys.set(name, new Promise((resolve, reject) => {
        const kept = window.Plotly;
        const script = document.createElement("script");
        script.src = BUNDLES[name];
        script.async = true;
        // A script's load event fires right after it ran: window.Plotly is its Plotly.
        script.addEventListener("load", () => {
          performance.mark(`hpo:plotly-${name}`);  // (bench/dashboard.py reads it)
          const loaded = window.Plotly;
          if (kept) window.Plotly = kept;
          resolve(loaded);
        });
        script.addEventListener("error", () => reject(new Error(`plotly.js (${name}) did not load`)));
        document.head.append(script);
      }));
    }
    return plotlys.get(name);
  }
  const plotlyOf = (section) => plotlyFor(section.dataset.bundle);
  let firstChartMarked = false;

  // Charts draw one at a time, each painted before the next starts: Plotly.react's
  // promise resolves only after the work queued behind it, so charts whose figures
  // arrived together (when plotly.js has just loaded) would otherwise all draw before
  // the first one shows. (A hidden tab gets no animation frames: a timeout stands in.)
  let drawing = Promise.resolve();
  const painted = () => new Promise((resolve) => {
    const done = () => window.setTimeout(resolve, 0);
    if (document.hidden) done(); else { window.requestAnimationFrame(done); window.setTimeout(done, 100); }
  });
  function inTurn(draw) {
    const turn = drawing.then(draw);
    drawing = turn.then(painted, painted);
    return turn;
  }

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

  // Bytes as the server renders them (artifacts_view.size_text): 1.2 MB; below 1 kB in bytes.
  function size(bytes) {
    if (bytes === null || bytes === undefined) return "—";
    if (bytes < 1000) return `${bytes} byte${bytes === 1 ? "" : "s"}`;
    const units = ["kB", "MB", "GB", "TB", "PB"];
    let value = bytes / 1000;
    while (value >= 1000 && units.length > 1) { value /= 1000; units.shift(); }
    return `${value.toFixed(1)} ${units[0]}`;
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

  async function showChart(section, data, studyId) {
    const plot = section.querySelector(".plot");
    section.querySelector(".note").textContent = data.note || "";
    section.dataset.version = data.version;
    if (!data.figure) {
      plot.removeAttribute("aria-busy");
      if (plot.dataset.plotted) (await plotlyOf(section)).purge(plot);
      delete plot.dataset.plotted;
      plot.replaceChildren(el("p", { class: "empty" }, data.message || "Nothing to show yet."));
      return;
    }
    const Plotly = await plotlyOf(section);
    plot.removeAttribute("aria-busy");
    if (!plot.dataset.plotted) plot.replaceChildren();
    const layout = Object.assign({ autosize: true }, data.figure.layout);
    await inTurn(() => Plotly.react(plot, data.figure.data, layout, PLOT_CONFIG)).then(() => {
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


  window.HPO = {
    API, PREFIX, POLL_MS, PLOT_CONFIG, plotlyFor, plotlyOf, loader, el, fmt, size, duration, ago, setLive,
    getJSON, every, trialUrl, showChart, chartError, whenVisible, addCurvePoint, markEnded,
  };
})();
