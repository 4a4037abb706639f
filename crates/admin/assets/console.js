// Weir's web console: the charts (uPlot), the answers of forms that write
// through the JSON API (htmx with json-enc), and numbers in JSON bodies.
// Served from the admin listener with the pages; no other origin is asked.
"use strict";

(function () {
  // Points a throughput chart keeps: at one reading every POLL_MS, two minutes.
  const POINTS_MAX = 60;
  const POLL_MS = 2000;

  // Fields marked data-number go into a JSON body as numbers, not strings
  // (json-enc sends form values as strings): `hx-vals="js:{...weirConsole.numbers(this)}"`.
  function numbers(form) {
    const out = {};
    form.querySelectorAll("[data-number]").forEach(function (input) {
      if (input.name && input.value !== "") {
        const n = Number(input.value);
        if (!Number.isNaN(n)) out[input.name] = n;
      }
    });
    return out;
  }

  // Fields marked data-json-object ("k=v" lines) go in as a JSON object.
  function objects(form) {
    const out = numbers(form);
    form.querySelectorAll("[data-json-object]").forEach(function (input) {
      const obj = {};
      input.value.split(/\n|,/).forEach(function (line) {
        const at = line.indexOf("=");
        if (at > 0) obj[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      });
      out[input.name] = obj;
    });
    return out;
  }

  // The error message of a JSON error answer ({"error": "..."}), or its text.
  function errorOf(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.error) return body.error;
    } catch (_) { /* not JSON */ }
    return xhr.status + " " + (xhr.statusText || "failed");
  }

  // What a successful write says, from its JSON answer.
  function doneText(xhr) {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
    if (!body) return "Done.";
    if (typeof body.redriven === "number") {
      return "Re-drove " + body.redriven + " dead letter" + (body.redriven === 1 ? "" : "s") +
        " to " + body.to + (body.more ? "; more are left: re-drive again." : ".");
    }
    if (body.created && body.topic) return "Created topic " + body.topic + ".";
    if (body.deleted && body.topic) return "Deleted topic " + body.topic + ".";
    return "Done.";
  }

  // A write's answer: said next to the form; on success the parts of the
  // page that show what changed are told (htmx `weir:NAME from:body`).
  document.addEventListener("htmx:afterRequest", function (event) {
    const elt = event.detail.elt;
    const holder = elt.closest && elt.closest("[data-changes]");
    if (!holder) return;
    const answer = holder.querySelector(".form-answer") ||
      document.getElementById("write-answer");
    const xhr = event.detail.xhr;
    if (event.detail.successful) {
      if (answer) {
        answer.textContent = doneText(xhr);
        answer.className = "form-answer good";
      }
      const changes = holder.dataset.changes;
      if (changes === "reload") {
        window.location.reload();
        return;
      }
      if (holder.tagName === "FORM" && !holder.hasAttribute("data-keep")) holder.reset();
      document.body.dispatchEvent(new CustomEvent("weir:" + changes, { detail: xhr.responseText }));
    } else if (answer) {
      answer.textContent = errorOf(xhr);
      answer.className = "form-answer bad";
    }
  });

  function chartWidth(el) {
    return Math.max(320, Math.min(el.clientWidth || 800, 1200));
  }

  function newChart(el, series, data, axes, windowSecs) {
    const note = el.querySelector(".chart-note");
    if (note) note.remove();
    const opts = {
      width: chartWidth(el),
      height: 220,
      // A throughput chart shows a fixed window ending at the last reading.
      scales: {
        x: windowSecs
          ? { time: true, range: function (u, min, max) { return [max - windowSecs, max]; } }
          : { time: true },
      },
      series: [{}].concat(series),
      axes: axes || [{}, { size: 70 }],
    };
    return new uPlot(opts, data, el);
  }

  // A live throughput chart: counters polled, rates between two readings.
  function throughput(el) {
    const src = el.dataset.throughput;
    const xs = [], bytesIn = [], bytesOut = [], recordsIn = [], recordsOut = [];
    let last = null;
    let chart = null;
    function poll() {
      if (!document.body.contains(el)) return;
      fetch(src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (now) {
          if (!now.enabled) {
            el.querySelector(".chart-note").textContent =
              "Metrics are off on this broker (metrics.enabled=false).";
            return;
          }
          if (last && now.time_ms > last.time_ms) {
            const secs = (now.time_ms - last.time_ms) / 1000;
            const rate = function (k) { return Math.max(0, (now[k] - last[k]) / secs); };
            xs.push(now.time_ms / 1000);
            bytesIn.push(rate("bytes_in"));
            bytesOut.push(rate("bytes_out"));
            recordsIn.push(rate("records_in"));
            recordsOut.push(rate("records_out"));
            [xs, bytesIn, bytesOut, recordsIn, recordsOut].forEach(function (a) {
              while (a.length > POINTS_MAX) a.shift();
            });
            const data = [xs, bytesIn, bytesOut, recordsIn, recordsOut];
            if (chart) {
              chart.setData(data);
            } else {
              chart = newChart(el, [
                { label: "produced B/s", stroke: "#2563eb", width: 2 },
                { label: "fetched B/s", stroke: "#16a34a", width: 2 },
                { label: "produced records/s", stroke: "#9333ea", scale: "rec" },
                { label: "fetched records/s", stroke: "#ea580c", scale: "rec" },
              ], data, [{}, { size: 70, label: "bytes/s" }, { scale: "rec", side: 1, size: 60, label: "records/s", grid: { show: false } }], POINTS_MAX * POLL_MS / 1000);
            }
            el.dataset.points = String(xs.length);
            el.dataset.bytesIn = String(bytesIn[bytesIn.length - 1]);
          }
          last = now;
        })
        .catch(function () { /* the next poll tries again */ })
        .finally(function () { setTimeout(poll, POLL_MS); });
    }
    poll();
  }

  // A group's lag over time: the lag fragment carries the history as a
  // JSON island (#lag-history); the chart is redrawn after each swap.
  let lagChart = null;
  function drawLag() {
    const island = document.getElementById("lag-history");
    const el = document.querySelector("[data-lag-chart]");
    if (!island || !el) return;
    let samples;
    try { samples = JSON.parse(island.textContent); } catch (_) { return; }
    const data = [
      samples.map(function (s) { return s.time_ms / 1000; }),
      samples.map(function (s) { return s.lag; }),
    ];
    el.dataset.points = String(samples.length);
    if (samples.length < 2) return;
    if (lagChart && document.body.contains(lagChart.root)) {
      lagChart.setData(data);
    } else {
      lagChart = newChart(el, [{ label: "lag (records)", stroke: "#dc2626", width: 2 }], data);
    }
  }

  document.addEventListener("htmx:afterSettle", drawLag);

  function start() {
    document.querySelectorAll("[data-throughput]").forEach(throughput);
    drawLag();
  }

  window.weirConsole = { numbers: numbers, objects: objects };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
