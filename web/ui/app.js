/* pointspace dashboard (served at /ui by web/ui/routes.py).
 *
 * What to show comes from the URL query, so a dashboard is a link that can be shared:
 *   /ui?board=b1&board=b2&counter=signups&user=42&metric=points&unique=visitors&space=lobby&window=120&step=1
 * (every user= is charted for every metric=; board=, counter=, unique= and space= repeat, one
 * panel each; top= rows per board; every= milliseconds between polls). The form writes the
 * same query with history.pushState: nothing ever reloads.
 *
 * Every `every` ms (1 s by default) each panel polls the server once, all in parallel; the next
 * poll starts when this one has finished, so a slow server is never sent a pile of requests.
 * Leaderboards read the native GET /api/leaderboards/<id>; series read GET /ui/api/series (or
 * /ui/api/uniques), Density spaces GET /ui/api/occupancy, whose windows end at the server's
 * clock. Polling pauses while the tab is hidden. The pickers read GET /ui/api/boards and
 * GET /api/spaces.
 *
 * With JWT on, a token (api:read) is kept in sessionStorage -- this tab only, never in the URL
 * where it would land in history and logs -- and sent as Authorization: Bearer.
 *
 * For tests and tools the state is also in data attributes: body[data-polls] counts finished
 * polls; a board panel has data-board, data-leader, data-size and rows with data-user,
 * data-score; a series panel has data-counter, data-user + data-metric, or data-name (a unique
 * series, from GET /ui/api/uniques, with data-exact), data-color (its line colour), data-total
 * and data-changes (how many times its data changed); a space panel has data-space,
 * data-color, data-count (the count at the window's end), data-highest and data-lowest (over
 * the window) and data-changes.
 */
"use strict";

(() => {
  const TOKEN_KEY = "pointspace.token";
  /* Line colours, chosen to stay apart from each other and from the grey axes and grid. */
  const PALETTE = ["#e8590c", "#1971c2", "#2f9e44", "#9c36b5", "#c2255c", "#0c8599"];
  const CHART_HEIGHT = 200;
  /* Y-axis tick spacings: counts are whole numbers, so no 0.2-steps on a quiet chart. */
  const COUNT_STEPS = Array.from({ length: 16 }, (_, e) => [1, 2, 5].map((m) => m * 10 ** e)).flat();
  const REQUEST_TIMEOUT_MS = 10000;
  const numbers = new Intl.NumberFormat("en");

  const $ = (selector) => document.querySelector(selector);
  const panelsEl = $("#panels");
  const statusEl = $("#status");
  const noticeEl = $("#notice");
  const form = $("#choose");

  /* ---------------------------------------------------------------------------------------- */
  /* Configuration from the query string                                                      */

  function intParam(query, name, fallback, low, high) {
    const raw = query.get(name);
    const value = raw === null || raw.trim() === "" ? NaN : Number(raw);
    if (!Number.isInteger(value)) return fallback;
    return Math.min(high, Math.max(low, value));
  }

  /** Most periods in one series answer: web/ui/routes.py's MAX_POINTS. */
  const MAX_POINTS = 2000;

  function readConfig(search) {
    const query = new URLSearchParams(search);
    const all = (name) => [...new Set(query.getAll(name).map((v) => v.trim()).filter(Boolean))];
    const window = intParam(query, "window", 120, 1, 366 * 86400);
    return {
      boards: all("board"),
      counters: all("counter"),
      users: all("user"),
      metrics: all("metric"),
      uniques: all("unique"),
      spaces: all("space"),
      window,
      // The server answers at most MAX_POINTS periods (web/ui/routes.py): by default, the
      // finest step that fits the window (one period spare for the alignment to the step).
      step: intParam(query, "step", Math.max(1, Math.ceil(window / (MAX_POINTS - 1))), 1, 86400),
      top: intParam(query, "top", 10, 1, 1000),
      every: intParam(query, "every", 1000, 250, 600000),
    };
  }

  function duration(seconds) {
    if (seconds % 86400 === 0) return `${seconds / 86400} d`;
    if (seconds % 3600 === 0) return `${seconds / 3600} h`;
    if (seconds % 60 === 0 && seconds >= 120) return `${seconds / 60} min`;
    return `${seconds} s`;
  }

  /* One line per x-axis label (uPlot's default two-line labels collide at small widths). */
  function timeLabel(span) {
    const pad = (n) => String(n).padStart(2, "0");
    return (seconds) => {
      const t = new Date(seconds * 1000);
      const hm = `${pad(t.getHours())}:${pad(t.getMinutes())}`;
      if (span <= 3600) return `${hm}:${pad(t.getSeconds())}`;
      if (span <= 2 * 86400) return hm;
      return `${t.getDate()} ${t.toLocaleString("en", { month: "short" })}`;
    };
  }

  /* The axes every chart shares: time along x, whole counts up y. */
  function chartAxes(windowSeconds) {
    const axis = { stroke: "#5c5f66", grid: { stroke: "#e9ecef", width: 1 }, ticks: { show: false } };
    const label = timeLabel(windowSeconds);
    const xAxis = { ...axis, size: 32, space: 70, values: (u, splits) => splits.map(label) };
    return [xAxis, { ...axis, size: 56, incrs: COUNT_STEPS }];
  }

  /* ---------------------------------------------------------------------------------------- */
  /* The server                                                                               */

  class ApiError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status;
      this.field = field;
    }
  }

  const api = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",

    async get(path) {
      const headers = { Accept: "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      let response;
      try {
        response = await fetch(path, {
          headers,
          cache: "no-store",
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      } catch (err) {
        throw new ApiError(0, `server unreachable (${err.name})`);
      }
      let body = null;
      try {
        body = await response.json();
      } catch {
        /* an error page that is not JSON: keep the status text */
      }
      if (!response.ok) {
        const message = (body && body.error) || response.statusText || "request failed";
        throw new ApiError(response.status, message, body && body.field);
      }
      return body;
    },

    setToken(token) {
      this.token = token.trim();
      if (this.token) sessionStorage.setItem(TOKEN_KEY, this.token);
      else sessionStorage.removeItem(TOKEN_KEY);
    },
  };

  /* ---------------------------------------------------------------------------------------- */
  /* Panels                                                                                   */

  function fromTemplate(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  function showError(el, err) {
    const box = el.querySelector(".error");
    if (err) {
      box.textContent = err.status ? `${err.status}: ${err.message}` : err.message;
      box.hidden = false;
      el.classList.add("failing");
    } else {
      box.hidden = true;
      el.classList.remove("failing");
    }
  }

  /* A live leaderboard: a ranked table whose score cells are bars scaled to the leader. */
  class BoardPanel {
    constructor(id, config) {
      this.id = id;
      this.config = config;
      this.el = fromTemplate("board-panel");
      this.el.dataset.board = id;
      this.el.querySelector(".title").textContent = id;
      this.body = this.el.querySelector("tbody");
    }

    async refresh() {
      const path = `/api/leaderboards/${encodeURIComponent(this.id)}?top=${this.config.top}`;
      const board = await api.get(path);
      const top = board.top || [];
      const best = Math.max(1, ...top.map((s) => Math.abs(s.score)));
      this.body.replaceChildren(...top.map((standing) => this.row(standing, best)));
      this.el.querySelector(".empty").hidden = top.length > 0;
      this.el.dataset.size = board.size;
      this.el.dataset.leader = top.length ? String(top[0].user) : "";
      const kind = (board.window || {}).kind;
      const span = { fixed: "fixed window", day: "today" }[kind] || `this ${kind || "window"}`;
      this.el.querySelector(".meta").textContent =
        `${board.metric} · ${span} · ${numbers.format(board.size)} ranked`;
    }

    row(standing, best) {
      const tr = document.createElement("tr");
      tr.dataset.user = String(standing.user);
      tr.dataset.score = String(standing.score);
      tr.dataset.rank = String(standing.rank + 1);
      const rank = document.createElement("td");
      rank.className = "rank";
      rank.textContent = String(standing.rank + 1);
      const user = document.createElement("td");
      user.className = "user";
      user.textContent = String(standing.user);
      const score = document.createElement("td");
      score.className = "score";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${(100 * Math.abs(standing.score)) / best}%`;
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = numbers.format(standing.score);
      score.append(bar, value);
      tr.append(rank, user, score);
      return tr;
    }

    resize() {}
  }

  /* A time series -- a global counter's, one user's metric's, or a unique series' distinct
   * members per period (path /ui/api/uniques) -- drawn by uPlot. */
  class SeriesPanel {
    constructor(params, title, color, config, path = "/ui/api/series") {
      this.params = params;
      this.path = path;
      this.config = config;
      this.color = color;
      this.el = fromTemplate("series-panel");
      Object.assign(this.el.dataset, params, { color, changes: "0" });
      this.el.querySelector(".title").textContent = title;
      this.el.querySelector(".meta").textContent =
        `per ${duration(config.step)}, last ${duration(config.window)}`;
      this.el.querySelector(".unit").textContent = `in the last ${duration(config.window)}`;
      this.chartEl = this.el.querySelector(".chart");
      this.plot = null;
      this.last = "";
    }

    async refresh() {
      const query = new URLSearchParams(this.params);
      query.set("last", String(this.config.window));
      query.set("step", String(this.config.step));
      const series = await api.get(`${this.path}?${query}`);
      /* A unique total is a union over the window; a sketch's is an estimate. */
      const approx = series.exact === false ? "≈ " : "";
      this.el.querySelector(".total .value").textContent = approx + numbers.format(series.total);
      if (series.kind === "unique") {
        this.el.dataset.exact = String(series.exact);
        this.el.querySelector(".meta").textContent =
          `distinct per ${duration(series.step)}, last ${duration(this.config.window)}`;
        this.el.querySelector(".unit").textContent = `distinct in the last ${duration(this.config.window)}`;
      }
      this.el.dataset.total = String(series.total);
      const key = JSON.stringify([series.starts[0], series.values]);
      if (key !== this.last) {
        this.last = key;
        this.el.dataset.changes = String(Number(this.el.dataset.changes) + 1);
      }
      /* A closing point at the window's end gives the last period its width in the stepped
       * line (each value is drawn from its period's start to the next point). */
      const values = series.values;
      const data = [[...series.starts, series.t2 + 1], [...values, values[values.length - 1]]];
      if (this.plot) this.plot.setData(data);
      else this.plot = new uPlot(this.options(), data, this.chartEl);
    }

    options() {
      return {
        width: this.width(),
        height: CHART_HEIGHT,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          /* From zero, so a quiet period looks quiet rather than zoomed into noise. */
          y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
        },
        series: [
          {},
          {
            label: this.el.querySelector(".title").textContent,
            stroke: this.color,
            width: 2,
            fill: `${this.color}1f`,
            paths: uPlot.paths.stepped({ align: 1 }),
            points: { show: false },
          },
        ],
        axes: chartAxes(this.config.window),
      };
    }

    width() {
      return Math.max(200, this.chartEl.clientWidth || this.el.clientWidth - 32);
    }

    resize() {
      if (this.plot) this.plot.setSize({ width: this.width(), height: CHART_HEIGHT });
    }
  }

  /* A Density space's occupancy (GET /ui/api/occupancy), drawn by uPlot: the count at each
   * period's end as a line through the period ends, over a band from the lowest to the
   * highest count at any instant within each period (a uPlot band between two stepped
   * series). The line runs inside the band: the count at a period's end is in that period's
   * range, and it is where the next period starts (unless a space's nightly reset falls
   * exactly on a period's first instant). */
  class SpacePanel {
    constructor(space, color, config) {
      this.space = space;
      this.config = config;
      this.color = color;
      this.el = fromTemplate("space-panel");
      Object.assign(this.el.dataset, { space, color, changes: "0" });
      this.el.style.setProperty("--series", color);
      this.el.querySelector(".title").textContent = `space ${space}`;
      this.el.querySelector(".meta").textContent =
        `per ${duration(config.step)}, last ${duration(config.window)}`;
      this.chartEl = this.el.querySelector(".chart");
      this.plot = null;
      this.last = "";
    }

    async refresh() {
      const query = new URLSearchParams({ space: this.space });
      query.set("last", String(this.config.window));
      query.set("step", String(this.config.step));
      const occ = await api.get(`/ui/api/occupancy?${query}`);
      this.el.querySelector(".total .value").textContent = numbers.format(occ.count);
      this.el.querySelector(".unit").textContent =
        `now · ${numbers.format(occ.lowest)} to ${numbers.format(occ.highest)} in the last ` +
        duration(this.config.window);
      Object.assign(this.el.dataset, {
        count: String(occ.count),
        highest: String(occ.highest),
        lowest: String(occ.lowest),
      });
      const key = JSON.stringify([occ.starts[0], occ.start, occ.end, occ.peak, occ.low]);
      if (key !== this.last) {
        this.last = key;
        this.el.dataset.changes = String(Number(this.el.dataset.changes) + 1);
      }
      /* x: each period's start, and a closing point at the window's end. The band's values
       * hold from their period's start to the next point; the line's points are the count
       * as the window starts and at each period's end. */
      const last = (list) => list[list.length - 1];
      const data = [
        [...occ.starts, occ.t2 + 1],
        [occ.start, ...occ.end],
        [...occ.peak, last(occ.peak)],
        [...occ.low, last(occ.low)],
      ];
      if (this.plot) this.plot.setData(data);
      else this.plot = new uPlot(this.options(), data, this.chartEl);
    }

    options() {
      const edge = {
        stroke: `${this.color}80`,
        width: 1,
        paths: uPlot.paths.stepped({ align: 1 }),
        points: { show: false },
      };
      return {
        width: this.width(),
        height: CHART_HEIGHT,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: { time: true },
          /* Zero in view, so an empty space looks empty; a count below zero (more exits seen
           * than entries: sensor drift) shows as such. */
          y: {
            range: (u, min, max) => {
              const low = Math.min(0, min);
              const high = Math.max(0, max);
              const pad = (high - low) * 0.1 || 1;
              return [low < 0 ? low - pad : 0, high + pad];
            },
          },
        },
        series: [
          {},
          {
            label: `${this.space} at each period's end`,
            stroke: this.color,
            width: 2,
            points: { show: false },
          },
          { label: "peak", ...edge },
          { label: "lowest", ...edge },
        ],
        bands: [{ series: [2, 3], fill: `${this.color}33` }],
        axes: chartAxes(this.config.window),
      };
    }

    width() {
      return Math.max(200, this.chartEl.clientWidth || this.el.clientWidth - 32);
    }

    resize() {
      if (this.plot) this.plot.setSize({ width: this.width(), height: CHART_HEIGHT });
    }
  }

  function buildPanels(config) {
    const panels = config.boards.map((id) => new BoardPanel(id, config));
    let colour = 0;
    const next = () => PALETTE[colour++ % PALETTE.length];
    for (const name of config.counters) {
      panels.push(new SeriesPanel({ counter: name }, `counter ${name}`, next(), config));
    }
    for (const name of config.uniques) {
      panels.push(new SeriesPanel({ name }, `unique ${name}`, next(), config, "/ui/api/uniques"));
    }
    for (const user of config.users) {
      for (const metric of config.metrics) {
        panels.push(new SeriesPanel({ user, metric }, `user ${user} · ${metric}`, next(), config));
      }
    }
    for (const space of config.spaces) {
      panels.push(new SpacePanel(space, next(), config));
    }
    return panels;
  }

  /* ---------------------------------------------------------------------------------------- */
  /* Polling                                                                                  */

  let config = null;
  let panels = [];
  let loop = null;
  let polls = 0;

  /* One polling loop per configuration. Only one poll of it is ever in flight: the next is
   * scheduled when this one has finished, and wake() (the tab became visible) starts one only
   * when none is running or due. stop() ends it for good, even with a poll in flight. */
  function pollLoop(loopPanels, every) {
    let timer = null;
    let busy = false;
    let stopped = false;

    async function run() {
      timer = null;
      if (stopped || document.hidden) return; /* wake() resumes a hidden tab */
      busy = true;
      const started = performance.now();
      const results = await Promise.allSettled(loopPanels.map((p) => p.refresh()));
      busy = false;
      if (stopped) return;
      report(loopPanels, results);
      timer = setTimeout(run, Math.max(0, every - (performance.now() - started)));
    }

    return {
      wake() {
        if (busy || stopped) return;
        clearTimeout(timer);
        run();
      },
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  function report(loopPanels, results) {
    let failed = 0;
    let unauthorized = false;
    results.forEach((result, i) => {
      const err = result.status === "rejected" ? result.reason : null;
      showError(loopPanels[i].el, err);
      if (err) {
        failed += 1;
        unauthorized ||= err.status === 401;
      }
    });
    polls += 1;
    document.body.dataset.polls = String(polls);
    const time = new Date().toLocaleTimeString("en-GB");
    statusEl.textContent = failed
      ? `updated ${time} · ${failed} of ${loopPanels.length} failing`
      : `live · updated ${time}`;
    statusEl.classList.toggle("failing", failed > 0);
    if (unauthorized) {
      notice("This server needs a token with the api:read scope: paste it under Token.");
      $("#auth").open = true;
    }
  }

  function apply(search) {
    config = readConfig(search);
    if (loop) loop.stop();
    loop = null;
    panels = buildPanels(config);
    panelsEl.replaceChildren(...panels.map((p) => p.el));
    fillForm(config);
    if (panels.length === 0) {
      showChooser();
      statusEl.textContent = "nothing chosen";
      return;
    }
    noticeEl.hidden = true;
    loop = pollLoop(panels, config.every);
    loop.wake();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && loop) loop.wake();
  });

  function notice(text, children = []) {
    noticeEl.replaceChildren(text, ...children);
    noticeEl.hidden = false;
  }

  /* With nothing chosen: offer the server's leaderboards and spaces as links. */
  async function showChooser() {
    const asked = config;
    const [boards, spaces] = await Promise.allSettled([
      api.get("/ui/api/boards"),
      api.get("/api/spaces"),
    ]);
    if (asked !== config) return;
    if (boards.status === "rejected") {
      notice(`Could not list the leaderboards: ${boards.reason.message}`);
      return;
    }
    const links = (param, ids) =>
      ids.flatMap((id, i) => {
        const a = document.createElement("a");
        a.href = `?${param}=${encodeURIComponent(id)}`;
        a.textContent = id;
        return i ? [", ", a] : [a];
      });
    const boardLinks = links("board", boards.value.boards.map((b) => b.id));
    /* Spaces are a bonus: a server without Density's data still offers its boards. */
    const spaceIds = spaces.status === "fulfilled" ? spaces.value.spaces : [];
    const spaceLinks = spaceIds.length ? ["; or a space: ", ...links("space", spaceIds)] : [];
    if (boardLinks.length) notice("Choose what to show above, or a leaderboard: ", [...boardLinks, ...spaceLinks]);
    else if (spaceLinks.length) notice("Choose what to show above, or a space: ", spaceLinks.slice(1));
    else notice("Choose what to show above. This server has no leaderboards yet.");
  }

  /* ---------------------------------------------------------------------------------------- */
  /* The form                                                                                 */

  function fillForm(cfg) {
    form.elements.board.value = cfg.boards.join(", ");
    form.elements.counter.value = cfg.counters.join(", ");
    form.elements.user.value = cfg.users.join(", ");
    form.elements.metric.value = cfg.metrics.join(", ");
    form.elements.unique.value = cfg.uniques.join(", ");
    form.elements.space.value = cfg.spaces.join(", ");
    form.elements.window.value = String(cfg.window);
    form.elements.step.value = String(cfg.step);
    form.elements.token.value = api.token;
  }

  function formQuery() {
    const query = new URLSearchParams();
    for (const name of ["board", "counter", "user", "metric", "unique", "space"]) {
      for (const value of form.elements[name].value.split(",")) {
        if (value.trim()) query.append(name, value.trim());
      }
    }
    for (const name of ["window", "step"]) {
      if (form.elements[name].value) query.set(name, form.elements[name].value);
    }
    const current = new URLSearchParams(location.search);
    for (const name of ["top", "every"]) {
      if (current.has(name)) query.set(name, current.get(name));
    }
    return `?${query}`;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    api.setToken(form.elements.token.value);
    const search = formQuery();
    history.pushState(null, "", search);
    apply(search);
  });

  $("#forget-token").addEventListener("click", () => {
    api.setToken("");
    form.elements.token.value = "";
  });

  noticeEl.addEventListener("click", (event) => {
    const link = event.target.closest("a");
    if (!link) return;
    event.preventDefault();
    history.pushState(null, "", link.search);
    apply(link.search);
  });

  window.addEventListener("popstate", () => apply(location.search));

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => panels.forEach((p) => p.resize()), 100);
  });

  /* The pickers' suggestions; a failure here only costs the suggestions. */
  const suggest = (list, ids) =>
    $(list).replaceChildren(...ids.map((id) => Object.assign(document.createElement("option"), { value: id })));
  api.get("/ui/api/boards").then((answer) => suggest("#board-ids", answer.boards.map((b) => b.id)), () => {});
  api.get("/api/spaces").then((answer) => suggest("#space-ids", answer.spaces), () => {});

  apply(location.search);
})();
