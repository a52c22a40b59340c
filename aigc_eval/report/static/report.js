(() => {
  "use strict";
  const el = (tag, cls, ...children) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  };

  const cellKey = (row, col) => {
    const cell = row.cells[col];
    const value = cell ? cell.dataset.v : undefined;
    if (value === undefined || value === "") return null;
    const number = Number(value);
    return Number.isNaN(number) ? value : number;
  };
  for (const table of document.querySelectorAll("table.sortable")) {
    for (const th of table.querySelectorAll("th[data-col]")) {
      th.tabIndex = 0;
      const sort = () => {
        const asc = th.dataset.dir !== "asc";
        for (const other of table.querySelectorAll("th[data-col]")) delete other.dataset.dir;
        th.dataset.dir = asc ? "asc" : "desc";
        const col = Number(th.dataset.col);
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          const x = cellKey(a, col), y = cellKey(b, col);
          if (x === null || y === null) return (x === null) - (y === null);
          const numbers = typeof x === "number" && typeof y === "number";
          const d = numbers ? x - y : String(x).localeCompare(String(y));
          return asc ? d : -d;
        });
        for (const row of rows) body.append(row);
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (event) => { if (event.key === "Enter") sort(); });
    }
  }

  const dataNode = document.getElementById("report-data");
  const root = document.getElementById("sample-browser");
  if (!dataNode || !root) return;
  const DATA = JSON.parse(dataNode.textContent);
  const PAGE = 30;
  const fmt = (v) => {
    if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
    const d = Math.abs(v) >= 1000 ? 0 : Math.abs(v) >= 10 ? 2 : 4;
    return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  };
  const state = { task: 0, metric: 0, filter: "all", a: 0, b: Math.min(1, DATA.rows.length - 1),
                  sort: "order", query: "", diff: "word", shown: PAGE };

  const option = (value, text) => { const o = el("option", null, text); o.value = String(value); return o; };
  const select = (id, label, onChange) => {
    const s = el("select"); s.id = id;
    s.addEventListener("change", () => { onChange(s.value); state.shown = PAGE; render(); });
    return [el("label", null, label, s), s];
  };

  const tabs = el("div", "tabs");
  DATA.tasks.forEach((task, i) => {
    const b = el("button", null, task.name + " (" + task.samples.length + ")");
    b.type = "button"; b.dataset.task = task.name;
    b.addEventListener("click", () => {
      state.task = i; state.metric = 0; state.shown = PAGE;
      setup(); render();
    });
    tabs.append(b);
  });
  const [metricLabel, metricSel] = select("sb-metric", "metric", (v) => { state.metric = Number(v); });
  const [filterLabel, filterSel] = select("sb-filter", "show", (v) => { state.filter = v; });
  const [aLabel, aSel] = select("sb-a", "A", (v) => { state.a = Number(v); });
  const [bLabel, bSel] = select("sb-b", "B", (v) => { state.b = Number(v); });
  const [sortLabel, sortSel] = select("sb-sort", "sort", (v) => { state.sort = v; });
  const [diffLabel, diffSel] = select("sb-diff", "diff vs reference", (v) => { state.diff = v; });
  const search = el("input");
  search.id = "sb-search"; search.type = "search"; search.placeholder = "id or text";
  search.addEventListener("input", () => {
    state.query = search.value.toLowerCase(); state.shown = PAGE;
    render();
  });
  DATA.rows.forEach((row, i) => { aSel.append(option(i, row.name)); bSel.append(option(i, row.name)); });
  aSel.value = String(state.a); bSel.value = String(state.b);
  for (const [v, t] of [["word", "words"], ["char", "characters"], ["off", "off"]]) {
    diffSel.append(option(v, t));
  }
  const controls = el("div", "controls", metricLabel, filterLabel, aLabel, bLabel, sortLabel,
                      el("label", null, "search", search), diffLabel);
  const count = el("div", "count"); count.id = "sb-count";
  const list = el("div"); list.id = "sb-list";
  const more = el("button", null, "show more"); more.type = "button"; more.id = "sb-more";
  more.addEventListener("click", () => { state.shown += PAGE; render(); });
  const legend = el("div", "legend", "Diff: ", el("ins", null, "only in the prediction"), " ",
                    el("del", null, "only in the reference"),
                    ". Per-sample scores; worse/better follow each metric's direction.");
  root.append(tabs, controls, legend, count, list, more);

  const task = () => DATA.tasks[state.task];
  const metric = () => task().metrics[state.metric];
  const score = (sample, row) => {
    const p = sample.preds[row];
    const v = p ? p.scores[state.metric] : null;
    return v === null || v === undefined ? null : v;
  };
  // Positive when B is better than A in the metric's direction (plain B - A when it has none).
  const gain = (sample) => {
    const a = score(sample, state.a), b = score(sample, state.b);
    if (a === null || b === null) return null;
    return metric().higher_is_better === false ? a - b : b - a;
  };

  function setup() {
    for (const b of tabs.children) b.classList.toggle("on", b.dataset.task === task().name);
    metricSel.replaceChildren(...task().metrics.map((m, i) => option(i, m.name + m.arrow)));
    metricSel.value = String(state.metric);
    const word = metric() && metric().higher_is_better === null ? ["higher", "lower"] : ["better", "worse"];
    filterSel.replaceChildren(option("all", "all samples"),
                              option("worse", "B " + word[1] + " than A"),
                              option("better", "B " + word[0] + " than A"),
                              option("differ", "B differs from A"));
    filterSel.value = state.filter;
    sortSel.replaceChildren(option("order", "dataset order"),
                            option("gain-asc", "B vs A: B " + word[1] + " first"),
                            option("gain-desc", "B vs A: B " + word[0] + " first"),
                            option("spread", "largest spread across rows"),
                            ...DATA.rows.map((row, i) => option("row-" + i, row.name + ": worst first")));
    sortSel.value = state.sort;
    diffSel.value = state.diff;
  }

  function visible() {
    const t = task();
    let samples = t.samples.filter((s) => {
      if (state.filter !== "all") {
        const g = gain(s);
        if (g === null) return false;
        if (state.filter === "worse" && !(g < 0)) return false;
        if (state.filter === "better" && !(g > 0)) return false;
        if (state.filter === "differ" && g === 0) return false;
      }
      if (!state.query) return true;
      const texts = s.preds.map((p) => (p ? p.text : ""));
      const hay = [s.id, s.prompt, ...s.refs, ...texts].join("\n").toLowerCase();
      return hay.includes(state.query);
    });
    const by = (f, asc) => samples.map((s) => [f(s), s]).sort((x, y) => {
      if (x[0] === null || y[0] === null) return (x[0] === null) - (y[0] === null);
      return asc ? x[0] - y[0] : y[0] - x[0];
    }).map((p) => p[1]);
    const down = metric() && metric().higher_is_better === false;
    if (state.sort === "gain-asc") samples = by(gain, true);
    else if (state.sort === "gain-desc") samples = by(gain, false);
    else if (state.sort === "spread") {
      samples = by((s) => {
        const v = DATA.rows.map((_, i) => score(s, i)).filter((x) => x !== null);
        return v.length ? Math.max(...v) - Math.min(...v) : null;
      }, false);
    } else if (state.sort.startsWith("row-")) {
      const row = Number(state.sort.slice(4));
      samples = by((s) => score(s, row), !down);
    }
    return samples;
  }

  function diffNode(pred) {
    const parts = state.diff === "word" ? pred.w : state.diff === "char" ? pred.c : null;
    const node = el("div", "text pred-text");
    if (!parts) node.append(pred.text);
    else {
      for (const [op, text] of parts) node.append(op === 0 ? text : el(op > 0 ? "ins" : "del", null, text));
    }
    if (!pred.text) node.append(el("span", "empty", " (empty prediction)"));
    return node;
  }

  function card(sample, index) {
    const t = task();
    const best = (() => {
      const vals = DATA.rows.map((_, i) => score(sample, i)).filter((v) => v !== null);
      if (!vals.length || metric().higher_is_better === null) return null;
      return metric().higher_is_better ? Math.max(...vals) : Math.min(...vals);
    })();
    const refs = sample.refs.length === 1 ? el("div", "text ref", sample.refs[0])
      : el("ol", "refs", ...sample.refs.map((r) => el("li", "text ref", r)));
    const preds = el("div", "preds");
    sample.preds.forEach((pred, i) => {
      if (!pred) return;
      const box = el("div", "pred");
      box.style.setProperty("--row", DATA.rows[i].color);
      const tags = [];
      if (state.filter !== "all" || state.sort.startsWith("gain")) {
        if (i === state.a) tags.push(el("span", "tag", "A"));
        if (i === state.b) tags.push(el("span", "tag", "B"));
      }
      box.append(el("div", "pname", DATA.rows[i].name, ...tags));
      box.append(diffNode(pred));
      const chips = el("div", "scores");
      t.metrics.forEach((m, k) => {
        const v = pred.scores[k];
        const chip = el("span", "chip", m.name + " " + fmt(v));
        if (k === state.metric) {
          chip.classList.add("sel");
          if (best !== null && v === best) chip.classList.add("top");
        }
        chips.append(chip);
      });
      if (i === state.b && state.a !== state.b && (state.filter !== "all" || state.sort.startsWith("gain"))) {
        const g = gain(sample);
        if (g !== null) {
          const d = score(sample, state.b) - score(sample, state.a);
          chips.append(el("span", "chip " + (g < 0 ? "worse" : g > 0 ? "better" : ""),
                          "\u0394 vs A " + (d > 0 ? "+" : "") + fmt(d)));
        }
      }
      box.append(chips);
      if (pred.ref > 0) box.append(el("div", "small muted", "diff against reference " + (pred.ref + 1)));
      preds.append(box);
    });
    const node = el("article", "card sample",
      el("div", "head", el("span", "sid", sample.id), el("span", "small muted", "#" + (index + 1))),
      el("div", "field", el("div", "label", "prompt"), el("div", "text prompt", sample.prompt)),
      el("div", "field", el("div", "label", sample.refs.length > 1 ? "references" : "reference"), refs),
      preds);
    node.dataset.id = sample.id;
    return node;
  }

  function render() {
    const t = task();
    if (!t) return;
    const samples = visible();
    const embedded = t.samples.length;
    const cut = t.total > embedded ? " (the first " + embedded + " of " + t.total + " are embedded)" : "";
    count.textContent = samples.length + " of " + t.samples.length + " samples" + cut;
    list.replaceChildren(...samples.slice(0, state.shown).map((s, i) => card(s, t.samples.indexOf(s))));
    more.hidden = samples.length <= state.shown;
  }

  setup();
  render();
})();
