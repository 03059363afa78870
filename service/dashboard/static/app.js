// hpo dashboard pages: fetches JSON from /api/v1/dashboard and draws it (helpers in lib.js).
// Live updates poll a cheap version endpoint and refetch only what changed.
"use strict";

(() => {
  const body = document.body;
  const {
    API, PREFIX, POLL_MS, PLOT_CONFIG, plotlyFor, plotlyOf, loader, el, fmt, size, duration, ago, setLive,
    getJSON, every, trialUrl, showChart, chartError, whenVisible, addCurvePoint, markEnded,
  } = window.HPO;

  // ------------------------------------------------------------------ study page

  const PREEMPTED = "handed back by a preempted worker (SIGTERM): not failures, not retries";

  class TrialsTable {
    constructor(studyId) {
      this.studyId = studyId;
      this.query = { state: "", optimizer: "", sort: "number", order: "desc", offset: 0, limit: 25 };
      this.requests = 0;  // table loads asked for; only the latest one draws
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
      // Answers can come back out of order (the page's first load, a poll, a filter
      // change): only the latest request may draw, or an older query's rows would
      // stay under the new filter.
      const request = ++this.requests;
      const data = await getJSON(`${API}/studies/${this.studyId}/trials?${params}`);
      if (request !== this.requests) return;
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
        el("td", {}, el("span", { class: `badge state-${r.state.toLowerCase()}` }, r.state.toLowerCase()),
          r.preemptions ? el("span", { class: "badge preempted", title: PREEMPTED }, `preempted ×${r.preemptions}`) : null),
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
      this.quiet = 0;  // polls that changed nothing (every tenth refreshes the bytes held)
    }

    // The first charts' figures and their plotly.js bundle are fetched at once (the
    // page preloads that bundle); the other charts' when they scroll into view.
    // The page may carry the first chart's answer (a JSON data block, when the server
    // had it cached): it is drawn from there, without a request.
    prefetch(count) {
      const inline = document.getElementById("first-chart");
      for (const section of this.sections.slice(0, count)) {
        const carried = inline && inline.dataset.for === section.dataset.chart;
        this.pending.set(section, carried ? Promise.resolve(JSON.parse(inline.textContent)) : this.fetchChart(section));
        plotlyFor(section.dataset.bundle).catch(() => setLive(false));
      }
    }

    fetchChart(section) {
      return loader.add(() => getJSON(`${API}/studies/${this.studyId}/charts/${section.dataset.chart}`));
    }

    start() {
      this.table = new TrialsTable(this.studyId);
      // The diagnosis (a pass over every finished trial) waits for the first charts'
      // answers, so that it never delays the chart on top of the page.
      const first = Array.from(this.pending.values());
      const settle = new Promise((resolve) => { window.setTimeout(resolve, 3000); });
      whenVisible(this.sections, (section) => this.loadChart(section));
      this.table.load().catch(() => setLive(false));
      Promise.race([Promise.allSettled(first), settle])
        .then(() => this.loadDiagnosis()).catch(() => setLive(false));
      every(POLL_MS, () => this.poll());
    }

    async loadDiagnosis() {
      const d = await getJSON(`${API}/studies/${this.studyId}/diagnosis`);
      this.diagnosisPending = d.pending;  // a big study's is built in the background: ask again
      if (this.diagnosis === d.version) return;
      this.diagnosis = d.version;
      renderDiagnosis(d);
    }

    async loadChart(section) {
      const name = section.dataset.chart;
      try {
        const pending = this.pending.get(section);
        this.pending.delete(section);
        const data = await (pending || this.fetchChart(section));
        // A big study answers with the previous figure while the new one is built:
        // nothing to redraw until its version moves.
        if (this.loaded.has(section) && data.version === section.dataset.version) return;
        if (name === "curves") { this.cursor = data.cursor ?? null; this.running = new Set(data.running || []); }
        this.loaded.add(section);
        await showChart(section, data, this.studyId);
      } catch (err) { chartError(section, err); }
    }

    async poll() {
      const v = await getJSON(`${API}/studies/${this.studyId}/version`);
      this.updateSummary(v);
      const last = this.last;
      this.last = v;
      // The first poll has nothing to compare with: what the page loaded at start may
      // already be older than this version, so it counts as a change.
      const changed = !last || v.trials !== last.trials;
      // Cheap updates first (table page, curve points), then the charts whose version
      // moved, through the loader (two at a time), so that one slow chart never holds
      // back the table or the curves.
      const jobs = [];
      if (this.cursor !== null && (v.metrics > this.cursor || (changed && this.running.size))) jobs.push(this.curvesDelta());
      if (changed || v.service !== last.service || v.metrics !== last.metrics) jobs.push(this.table.load(), this.loadStored());
      else if (++this.quiet % 10 === 0) jobs.push(this.loadStored());  // the reaper's collections move no version
      if ((last && v.service !== last.service) || this.diagnosisPending) jobs.push(this.loadDiagnosis());
      for (const section of this.loaded) {
        if (section.dataset.chart !== "curves" && section.dataset.version !== v.trials) jobs.push(this.loadChart(section));
      }
      const failed = (await Promise.allSettled(jobs)).find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
    }

    updateSummary(v) {
      showStatus(document.getElementById("study-status"), v);
      const waiting = document.getElementById("study-waiting");
      if (waiting) { waiting.textContent = v.waiting_reason || ""; waiting.hidden = !v.waiting_reason; }
      for (const node of document.querySelectorAll("[data-count]")) node.textContent = String(v.counts[node.dataset.count] || 0);
      const link = document.getElementById("best-link");
      if (!v.best || !link || link.dataset.number === String(v.best.number)) return;
      link.dataset.number = String(v.best.number);
      link.href = trialUrl(this.studyId, v.best.number);
      link.textContent = `#${v.best.number}`;
      document.getElementById("best-value").textContent = fmt(v.best.value);
      document.getElementById("best-settings").replaceChildren(...Object.entries(v.best.settings)
        .map(([key, value]) => el("div", {}, el("dt", {}, key), el("dd", {}, fmt(value)))));
    }

    // The bytes the study's artifacts hold (GET /api/v1/studies/{id}/artifacts), per kind.
    async loadStored() {
      const node = document.getElementById("stored-bytes");
      if (!node) return;
      const held = (await getJSON(node.dataset.url)).bytes;
      node.textContent = size(held.total);
      node.title = `${held.total.toLocaleString("en-US")} byte${held.total === 1 ? "" : "s"} in ${held.count} file${held.count === 1 ? "" : "s"}`;
      const kinds = Object.entries(held).filter(([k]) => k !== "total" && k !== "count").sort(([a], [b]) => (a < b ? -1 : 1));
      document.getElementById("stored-kinds").textContent = kinds.map(([k, v]) => `${k} ${size(v)}`).join(", ") || "none kept";
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
        await (await plotlyOf(section)).react(plot, plot.data, plot.layout, PLOT_CONFIG);
      }
    }
  }

  // Findings per kind and each proposal (message + spec edit); calm when nothing was found.
  function renderDiagnosis(d) {
    const summary = document.getElementById("diagnosis-summary");
    const kinds = Object.entries(d.findings || {});
    const proposals = d.proposals || [];
    summary.className = "muted";
    if (d.pending) summary.textContent = `Diagnosing ${d.trials.toLocaleString()} trials…`;
    else if (d.external) summary.textContent = "Not available: this study was created outside the service (no trial records).";
    else if (!d.trials) summary.textContent = "Nothing to diagnose yet: no trial has finished.";
    else if (!kinds.length && !proposals.length) {
      summary.className = "ok";
      summary.textContent = `No problem found in ${d.trials} finished trial${d.trials === 1 ? "" : "s"}.`;
    } else if (!proposals.length) summary.textContent = `${d.trials} finished trials: no pattern strong enough to propose a change.`;
    else summary.textContent = `${d.trials} finished trials: ${proposals.length} proposed change${proposals.length === 1 ? "" : "s"} to the search space.`;
    const chips = document.getElementById("diagnosis-findings");
    chips.replaceChildren(...kinds.map(([kind, n]) => el("li", {}, `${kind.replace(/_/g, " ")}: ${n} trial${n === 1 ? "" : "s"}`)));
    chips.hidden = !kinds.length;
    const list = document.getElementById("diagnosis-proposals");
    list.replaceChildren(...proposals.map((p) => el("li", {},
      el("span", { class: "message" }, p.message),
      el("div", { class: "edit" }, `edit: ${p.edit.path}: ${JSON.stringify(p.edit.old)} → ${JSON.stringify(p.edit.new)}`))));
    list.hidden = !proposals.length;
  }

  // ------------------------------------------------------------------ study labels

  // A study's label (the API's StudySummary.status, and why it waits) on a badge.
  function showStatus(badge, s) {
    if (!badge || !s.status) return badge;
    badge.className = `badge state-${s.status}`;
    badge.dataset.status = s.status;
    badge.dataset.waitingOn = s.waiting_on || "";
    badge.title = s.waiting_reason || "";
    badge.textContent = s.waiting_on ? `${s.status}: ${s.waiting_on.replace(/_/g, " ")}` : s.status;
    return badge;
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
        el("td", {}, showStatus(el("span", { class: "badge study-status" }), s)),
        el("td", {}, s.sampler),
        el("td", { class: "num" }, s.counts.complete), el("td", { class: "num" }, s.counts.pruned),
        el("td", { class: "num" }, s.counts.fail), el("td", { class: "num" }, s.counts.running),
        el("td", { class: "num" }, s.counts.waiting + s.counts.queued), el("td", { class: "num" }, s.counts.total),
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

  const trialLink = (t, label) => el("a", { href: trialUrl(t.study_id, t.number) }, label);

  // The trials a worker holds: a pack's members grouped by study ("pack of 3 study #36,
  // #37, #38", each a link), its one trial, or "idle".
  function workerRunning(w) {
    if (w.pack.size > 1) {
      const studies = new Map();
      for (const t of w.pack.trials) studies.set(t.study, [...(studies.get(t.study) || []), t]);
      const parts = Array.from(studies, ([study, trials], i) => [i ? "; " : null, `${study} `,
        ...trials.flatMap((t, j) => [j ? ", " : null, trialLink(t, `#${t.number}`)])]).flat();
      return el("td", { class: "pack" }, el("span", { class: "badge" }, `pack of ${w.pack.size}`), " ", ...parts);
    }
    const t = w.pack.trials[0] || w.trial;
    return el("td", {}, t ? trialLink(t, `${t.study} #${t.number}`) : "idle");
  }

  // The device's latest utilisation (a meter), CPU share for GPU workers, and the hint.
  function workerUtilisation(w) {
    const t = w.telemetry;
    if (!t || t.util_pct === undefined) return el("td", {}, "—");
    const label = `${w.gpu ? "GPU" : "CPU"} ${Math.round(t.util_pct)} %`;
    const cpu = w.gpu && t.cpu_pct !== undefined ? ` · CPU ${Math.round(t.cpu_pct)} %` : "";
    return el("td", { class: t.fresh ? "util" : "util stale", title: t.at ? `sampled ${ago(t.at)}` : null },
      el("meter", { min: "0", max: "100", low: "50", optimum: "100", value: String(t.util_pct) }), ` ${label}${cpu}`,
      w.hint ? el("div", { class: "hint-text" }, w.hint) : null);
  }

  function workerMemory(t) {
    if (!t) return "—";
    const parts = [];
    if (t.device_memory_mb !== undefined) parts.push(`device ${Math.round(t.device_memory_mb).toLocaleString()}`);
    if (t.host_memory_mb !== undefined) parts.push(`host ${Math.round(t.host_memory_mb).toLocaleString()}`);
    return parts.join(" · ") || "—";
  }

  function workerRow(w) {
    const rounded = (v) => (v === null ? "—" : Math.round(v).toLocaleString());
    return el("tr", { class: w.alive ? "" : "gone", "data-worker": w.worker_id },
      el("td", {}, w.name || w.worker_id, w.alive ? null : el("span", { class: "badge state-fail" }, "gone")),
      el("td", {}, w.hostname),
      el("td", {}, w.devices.join(", ") || "—"),
      workerRunning(w),
      workerUtilisation(w),
      el("td", { class: "num" }, workerMemory(w.telemetry)),
      el("td", { title: w.last_seen_at }, ago(w.last_seen_at)),
      el("td", { class: "num" }, rounded(w.samples_per_s)),
      el("td", { class: "num" }, rounded(w.peak_memory_mb)),
      el("td", { class: "num" }, w.recent_trials),
      el("td", {}, w.version || "—"));
  }

  function workersPage() {
    const load = async () => {
      const workers = await getJSON(`${API}/workers`);
      document.getElementById("workers-body").replaceChildren(...workers.map(workerRow));
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

  // ------------------------------------------------------------------ schedule page

  const trialCell = (studyId, number) => el("td", { class: "num" },
    number === null || number === undefined ? "—" : el("a", { href: trialUrl(studyId, number) }, `#${number}`));

  function changedText(s) {
    const parts = [];
    if (s.exploited_member !== null) parts.push(`copied member ${s.exploited_member}`);
    for (const [name, [before, after]] of Object.entries(s.changed)) parts.push(`${name} ${fmt(before)} → ${fmt(after)}`);
    return parts.join("; ") || "—";
  }

  function renderLineage(studyId, d) {
    const best = new Set(d.best ? d.best.lineage : []);
    document.getElementById("best-lineage").textContent = d.best
      ? `best trial #${d.best.number} (${fmt(d.best.value)}): ${d.best.lineage.map((n) => `#${n}`).join(" → ")}` : "";
    const rows = d.segments.map((s) => el("tr", { class: best.has(s.number) ? "best-lineage" : null, "data-number": s.number ?? "" },
      el("td", { class: "num" }, s.member), el("td", { class: "num" }, s.segment),
      trialCell(studyId, s.number), trialCell(studyId, s.parent_number),
      el("td", { class: "num" }, s.start_step), el("td", { class: "num" }, s.end_step),
      el("td", {}, changedText(s)), el("td", { class: "num" }, fmt(s.value)), el("td", {}, s.state)));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No segment yet.")));
    document.getElementById("lineage-body").replaceChildren(...rows);
  }

  function renderAsha(studyId, d) {
    document.getElementById("rungs-body").replaceChildren(...d.rungs.map((r) => el("tr", {},
      el("td", { class: "num" }, r.rung), el("td", { class: "num" }, r.step), el("td", { class: "num" }, r.reached),
      el("td", { class: "num" }, r.paused), el("td", { class: "num" }, r.promoted), el("td", { class: "num" }, r.ended))));
    const rows = d.promotions.map((p, i) => el("tr", {},
      el("td", { class: "num" }, i + 1), trialCell(studyId, p.number),
      el("td", { class: "num" }, p.from_rung), el("td", { class: "num" }, p.to_rung),
      el("td", { class: "num" }, fmt(p.value)), el("td", { class: "num" }, fmt(p.next_value)),
      el("td", {}, p.resumed_at ? ago(p.resumed_at) : "queued")));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "No promotion yet.")));
    document.getElementById("promotions-body").replaceChildren(...rows);
  }

  // Tables from /schedule/{kind}, charts from /schedule/charts/{name}; both again when
  // the schedule's version moves.
  function schedulePage() {
    const studyId = body.dataset.studyId;
    const kind = body.dataset.schedule;
    const sections = Array.from(document.querySelectorAll("[data-schedule-chart]"));
    let version = null;
    const load = async () => {
      const d = await getJSON(`${API}/studies/${studyId}/schedule/${kind}`);
      if (d.version === version) return;
      version = d.version;
      if (kind === "pbt") renderLineage(studyId, d); else renderAsha(studyId, d);
      await Promise.all(sections.map((section) =>
        loader.add(() => getJSON(`${API}/studies/${studyId}/schedule/charts/${section.dataset.scheduleChart}`))
          .then((data) => showChart(section, data, studyId)).catch((err) => chartError(section, err))));
    };
    load().then(() => setLive(true), () => setLive(false));
    every(POLL_MS * 2, load);
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
    schedule: schedulePage,
  };
  const page = pages[body.dataset.page];
  if (page) page();  // a deferred script: the document is parsed
})();
