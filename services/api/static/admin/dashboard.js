// Loupe admin dashboard: polls /v1/admin/queues with the admin key kept in sessionStorage and
// draws queue depth over time (hand-written SVG), workers, throughput and recent failures, each
// failure with a button that retries it (POST /v1/admin/jobs/{id}/retry).
// No build step: plain ES2017, no dependencies. All data goes in through textContent.
(function () {
  "use strict";
  var KEY = "loupe.adminKey";
  var HISTORY_MS = 10 * 60 * 1000;
  var COLORS = ["#2f6fde", "#e07b24", "#2a9d68", "#a44bd1", "#c9403a"];
  var body = document.body;
  var pollMs = parseInt(body.dataset.pollMs, 10) || 3000;
  var url = body.dataset.queuesUrl;
  var retryUrl = body.dataset.retryUrl; // with JOB_ID where the job's id goes
  var history = []; // [{t: ms, depths: {queue: depth}}]
  var timer = null;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function fmt(x) { return x === null || x === undefined ? "–" : String(x); }

  function setStatus(text, isError) {
    var s = $("status");
    s.textContent = text;
    s.className = isError ? "error" : "muted";
  }

  function fillTable(id, rows) {
    var tbody = $(id).querySelector("tbody");
    tbody.replaceChildren();
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (c) {
        if (c instanceof Node) {
          var td = el("td");
          td.appendChild(c);
          tr.appendChild(td);
        } else {
          tr.appendChild(el("td", fmt(c)));
        }
      });
      tbody.appendChild(tr);
    });
    if (!rows.length) {
      var tr = el("tr");
      var td = el("td", "none", "muted");
      td.colSpan = $(id).querySelectorAll("th").length;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
  }

  function card(label, value) {
    var c = el("div", null, "card");
    c.appendChild(el("div", fmt(value), "value"));
    c.appendChild(el("div", label, "label"));
    return c;
  }

  function drawChart() {
    var chart = $("depth-chart");
    var W = 800, H = 220, L = 48, R = 10, T = 10, B = 24;
    chart.replaceChildren();
    var queues = {};
    history.forEach(function (p) { Object.keys(p.depths).forEach(function (q) { queues[q] = 1; }); });
    var names = Object.keys(queues).sort();
    // The x axis spans the history we have: at least a minute, at most HISTORY_MS.
    var now = Date.now();
    var span = history.length ? Math.min(HISTORY_MS, Math.max(60000, now - history[0].t)) : 60000;
    var t0 = now - span;
    var max = 1;
    history.forEach(function (p) {
      names.forEach(function (q) { max = Math.max(max, p.depths[q] || 0); });
    });
    function x(t) { return L + (W - L - R) * (t - t0) / span; }
    function y(v) { return T + (H - T - B) * (1 - v / max); }
    [0, 0.5, 1].forEach(function (f) {
      var v = Math.round(max * f);
      chart.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ee" }));
      var label = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11,
                                fill: "#6b7385" });
      label.textContent = String(v);
      chart.appendChild(label);
    });
    var ago = span >= 120000 ? "-" + Math.round(span / 60000) + " min" : "-" + Math.round(span / 1000) + " s";
    [[ago, t0, "start"], ["now", now, "end"]].forEach(function (a) {
      var label = svg("text", { x: x(a[1]), y: H - 6, "text-anchor": a[2], "font-size": 11,
                                fill: "#6b7385" });
      label.textContent = a[0];
      chart.appendChild(label);
    });
    var legend = $("legend");
    legend.replaceChildren();
    names.forEach(function (q, i) {
      var color = COLORS[i % COLORS.length];
      var points = history.map(function (p) {
        return x(p.t).toFixed(1) + "," + y(p.depths[q] || 0).toFixed(1);
      }).join(" ");
      chart.appendChild(svg("polyline", { points: points, fill: "none", stroke: color,
                                          "stroke-width": 2, "class": "series",
                                          "data-queue": q }));
      var item = el("span");
      var swatch = el("i");
      swatch.style.background = color;
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(q));
      legend.appendChild(item);
    });
    chart.dataset.points = String(history.length);
  }

  function render(data) {
    var now = Date.now();
    var depths = {};
    data.queues.forEach(function (q) { depths[q.queue] = q.depth; });
    history.push({ t: now, depths: depths });
    history = history.filter(function (p) { return p.t >= now - HISTORY_MS; });

    var w15 = data.throughput["15m"] || {};
    var cards = $("cards");
    cards.replaceChildren();
    var depth = data.queues.reduce(function (s, q) { return s + q.depth; }, 0);
    var oldest = data.queues.reduce(function (m, q) {
      return q.oldest_age_seconds === null ? m : Math.max(m, q.oldest_age_seconds);
    }, 0);
    cards.appendChild(card("queued messages", depth));
    cards.appendChild(card("oldest queued (s)", Math.round(oldest)));
    cards.appendChild(card("running jobs", data.jobs.by_status.running));
    cards.appendChild(card("workers online", data.workers.online));
    cards.appendChild(card("slots in use", data.workers.slots_in_use + " / " + data.workers.slots));
    cards.appendChild(card("finished / min (15 m)", w15.per_minute));

    drawChart();
    var queueRows = [];
    data.queues.forEach(function (q) {
      q.priorities.forEach(function (p) {
        queueRows.push([q.queue, p.priority, p.depth, p.oldest_age_seconds]);
      });
    });
    fillTable("queues-table", queueRows);
    fillTable("workers-table", data.workers.items.map(function (w) {
      return [w.id, w.queues.join(", "), w.engine, w.model, w.slots_in_use + " / " + w.slots,
              w.seconds_since_heartbeat + " s ago"];
    }));
    fillTable("throughput-table", Object.keys(data.throughput).map(function (k) {
      var w = data.throughput[k];
      return [k, w.completed, w.per_minute, w.by_status.succeeded || 0, w.by_status.failed || 0,
              fmt(w.queue_wait_seconds.p50) + " / " + fmt(w.queue_wait_seconds.p95),
              fmt(w.run_seconds.p50) + " / " + fmt(w.run_seconds.p95)];
    }));
    fillTable("failures-table", data.recent_failures.map(function (f) {
      return [f.completed_at, f.id, f.key_id, f.model, f.error.code + ": " + f.error.message,
              retryButton(f.id)];
    }));
    setStatus("updated " + new Date().toLocaleTimeString(), false);
  }

  function retryButton(jobId) {
    var button = el("button", "Retry", "retry");
    button.type = "button";
    button.dataset.jobId = jobId;
    return button;
  }

  function setRetryStatus(text, isError) {
    var s = $("retry-status");
    s.textContent = text;
    s.className = isError ? "error" : "muted";
  }

  // One listener for every row's button: the table is redrawn on each poll.
  function retry(ev) {
    var button = ev.target.closest("button.retry");
    var key = sessionStorage.getItem(KEY);
    if (!button || !key) return;
    var jobId = button.dataset.jobId;
    button.disabled = true;
    button.textContent = "Retrying…";
    fetch(retryUrl.replace("JOB_ID", encodeURIComponent(jobId)), {
      method: "POST", headers: { Authorization: "Bearer " + key }
    })
      .then(function (r) {
        return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
      })
      .then(function (res) {
        if (res.ok) {
          setRetryStatus("Job " + jobId + " is queued again (its attempt " +
                         (res.data.attempts + 1) + " comes next).", false);
          poll();
          return;
        }
        var message = (res.data.error && res.data.error.message) || ("HTTP " + res.status);
        setRetryStatus("Retry of " + jobId + " refused: " + message, true);
        button.disabled = false;
        button.textContent = "Retry";
        if (res.status === 401 || res.status === 403) logout(false);
      })
      .catch(function (err) { setRetryStatus("Cannot reach the server: " + err, true); });
  }

  function poll() {
    var key = sessionStorage.getItem(KEY);
    if (!key) return;
    fetch(url, { headers: { Authorization: "Bearer " + key } })
      .then(function (r) {
        return r.json().then(function (data) { return { ok: r.ok, status: r.status, data: data }; });
      })
      .then(function (res) {
        if (res.ok) { render(res.data); return; }
        var message = (res.data.error && res.data.error.message) || ("HTTP " + res.status);
        setStatus(message, true);
        if (res.status === 401 || res.status === 403) logout(false);
      })
      .catch(function (err) { setStatus("cannot reach the server: " + err, true); });
  }

  function connect() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    if (timer === null) timer = setInterval(poll, pollMs);
    poll();
  }

  function logout(clearStatus) {
    sessionStorage.removeItem(KEY);
    if (timer !== null) { clearInterval(timer); timer = null; }
    $("dashboard").hidden = true;
    $("login").hidden = false;
    if (clearStatus) setStatus("not connected", false);
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("admin-key").value.trim());
    $("admin-key").value = "";
    connect();
  });
  $("logout").addEventListener("click", function () { logout(true); });
  $("failures-table").addEventListener("click", retry);
  if (sessionStorage.getItem(KEY)) connect();
})();
