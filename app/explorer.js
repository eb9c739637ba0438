// The page's browser side: scores, table, chart and heatmap captions recomputed at any lambda
// and threshold without asking the server (app/ui.py loads this file into the page's <head>).
//
// The server sends, once per image, each class's logit split: logit = base + lambda * attention
// (app/inference.py); a slider move is one multiply-add per class here. The server stays the
// reference: tests/test_app_browser.py compares these numbers with the head's logits_from_maps.
(() => {
  if (window.csraExplorer) return;  // both views load this file; the first one defines it
  const S = {data: null, lam: null, thr: null, topk: null, tiles: {}, tileKey: null, legend: "",
             scoreViews: new Set(), tileViews: new Set(), trigger: null, last: null, pending: null,
             controls: {alpha: 0.5, scale: "global", picked: [], model: null}, statusViews: new Set(),
             statusProps: null, upload: null, sent: 0, status: "", kept: {}};
  const CHART_ROWS = 30;
  const LIVE_IN_FLIGHT = 2;
  const TYPED_BOXES = "#csra-lambda input[type=number], #csra-threshold input[type=number], " +
                      "#csra-alpha input[type=number]";
  const ANALYSING = "Analysing the image…";
  const esc = (s) => String(s).replace(/[&<>"']/g,
    (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

  // A slider value as a number in [0, 1]; a note when it had to be clamped or was not a number.
  function unit(value, name, fallback) {
    const v = Number(value);
    if (value === null || value === "" || !Number.isFinite(v)) {
      return {v: fallback, note: `${name} must be a number between 0 and 1: kept ${fallback.toFixed(2)}`};
    }
    if (v < 0 || v > 1) {
      const c = Math.min(1, Math.max(0, v));
      return {v: c, note: `${name} is between 0 and 1: using ${c.toFixed(2)}`};
    }
    return {v, note: ""};
  }

  // Scores at the current lambda: the same formulas as app/inference.py's scores_at.
  function compute() {
    const d = S.data;
    if (!d || !d.names) return null;
    const notes = [];
    const lam = unit(S.lam ?? d.lam, "λ", d.lam);
    const thr = unit(S.thr ?? d.threshold, "threshold", d.threshold);
    for (const x of [lam, thr]) if (x.note) notes.push(x.note);
    const n = d.names.length;
    const logits = new Float64Array(n), att = new Float64Array(n), probs = new Float64Array(n);
    for (let i = 0; i < n; i++) { att[i] = lam.v * d.attention[i]; logits[i] = d.base[i] + att[i]; }
    if (d.kind === "softmax") {
      let m = -Infinity, sum = 0;
      for (let i = 0; i < n; i++) m = Math.max(m, logits[i]);
      for (let i = 0; i < n; i++) { probs[i] = Math.exp(logits[i] - m); sum += probs[i]; }
      for (let i = 0; i < n; i++) probs[i] /= sum;
    } else {
      for (let i = 0; i < n; i++) probs[i] = 0.5 * (1 + Math.tanh(0.5 * logits[i]));
    }
    const order = Array.from({length: n}, (_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
    const present = order.filter((i) => probs[i] >= thr.v);
    const thrLogit = d.kind === "sigmoid" && thr.v > 0 && thr.v < 1 ? Math.log(thr.v / (1 - thr.v)) : null;
    return {lam: lam.v, thr: thr.v, logits, att, probs, order, present, thrLogit, notes};
  }

  function summary(r) {
    const d = S.data;
    const found = r.present.slice(0, 8).map((i) => `${esc(d.names[i])} (${r.probs[i].toFixed(2)})`);
    const more = r.present.length > 8 ? ` and ${r.present.length - 8} more` : "";
    const notes = r.notes.map((t) => `<div class="csra-note">⚠️ ${esc(t)}</div>`).join("");
    return `${notes}λ = ${r.lam.toFixed(2)}, ${esc(d.kind_text)}. ` +
      `Present at p ≥ ${r.thr.toFixed(2)}: ${found.length ? found.join(", ") + more : "none"}.`;
  }

  function table(r) {
    const d = S.data;
    const limit = d.names.length > d.full_table_limit ? Math.max(1, Number(S.topk ?? d.top_k) || d.top_k) : d.names.length;
    const rows = r.order.slice(0, limit).map((i) =>
      `<tr class="${r.probs[i] >= r.thr ? "present" : ""}"><td>${esc(d.names[i])}</td>` +
      `<td>${r.probs[i].toFixed(4)}</td><td>${r.logits[i].toFixed(3)}</td>` +
      `<td>${d.base[i].toFixed(3)}</td><td>${r.att[i].toFixed(3)}</td>` +
      `<td>${r.probs[i] >= r.thr ? "yes" : ""}</td></tr>`).join("");
    const shown = limit < d.names.length ? `<caption>top ${limit} of ${d.names.length} classes</caption>` : "";
    return `<table class="csra-table">${shown}<thead><tr><th>class</th><th>probability</th><th>logit</th>` +
      `<th>base (avg pool)</th><th>λ × attention</th><th>present</th></tr></thead><tbody>${rows}</tbody></table>`;
  }

  // Horizontal bars, sized to the element's width: base from 0, then lambda x attention on top,
  // a black tick at the logit, a dashed line at the threshold's logit (sigmoid models).
  function chart(r, width) {
    const d = S.data;
    const rows = r.order.slice(0, CHART_ROWS);
    width = Math.max(260, Math.floor(width || 600));
    const labelW = Math.min(150, Math.round(width * 0.36)), right = 12, rowH = 17, top = 18, bottom = 30;
    const plotW = width - labelW - right, height = top + rowH * rows.length + bottom;
    let lo = 0, hi = 0;
    for (const i of rows) for (const v of [d.base[i], r.logits[i]]) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (r.thrLogit !== null) { lo = Math.min(lo, r.thrLogit); hi = Math.max(hi, r.thrLogit); }
    const pad = 0.05 * Math.max(hi - lo, 1e-6); lo -= pad; hi += pad;
    const x = (v) => labelW + (v - lo) / (hi - lo) * plotW;
    const raw = (hi - lo) / Math.max(2, Math.floor(plotW / 70));
    const p10 = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((m) => m * p10).find((s) => s >= raw);
    const out = [`<svg class="csra-chart-svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `role="img" aria-label="logits of the ${rows.length} most probable classes">`];
    for (let t = Math.ceil(lo / step) * step; t < hi; t += step) {
      const tx = x(t).toFixed(1);
      out.push(`<line x1="${tx}" y1="${top}" x2="${tx}" y2="${height - bottom}" class="grid"/>` +
        `<text x="${tx}" y="${height - bottom + 13}" text-anchor="middle" class="tick">${+t.toPrecision(6)}</text>`);
    }
    out.push(`<line x1="${x(0).toFixed(1)}" y1="${top}" x2="${x(0).toFixed(1)}" y2="${height - bottom}" class="zero"/>`);
    rows.forEach((i, k) => {
      const y = top + k * rowH, b = d.base[i], t = r.logits[i];
      const name = d.names[i].length > 22 ? d.names[i].slice(0, 21) + "…" : d.names[i];
      out.push(`<g class="bar${r.probs[i] >= r.thr ? " present" : ""}"><title>${esc(d.names[i])}: p = ${r.probs[i].toFixed(4)}, ` +
        `logit ${t.toFixed(3)} = base ${b.toFixed(3)} + λ×attention ${r.att[i].toFixed(3)}</title>` +
        `<text x="${labelW - 5}" y="${y + 12}" text-anchor="end">${esc(name)} ${r.probs[i].toFixed(2)}</text>` +
        `<rect x="${Math.min(x(0), x(b)).toFixed(1)}" y="${y + 2}" width="${Math.abs(x(b) - x(0)).toFixed(1)}" height="12" class="base"/>` +
        `<rect x="${Math.min(x(b), x(t)).toFixed(1)}" y="${y + 2}" width="${Math.abs(x(t) - x(b)).toFixed(1)}" height="12" class="att"/>` +
        `<line x1="${x(t).toFixed(1)}" y1="${y}" x2="${x(t).toFixed(1)}" y2="${y + 16}" class="logit"/></g>`);
    });
    if (r.thrLogit !== null) {
      const tx = x(r.thrLogit);
      const anchor = tx > labelW + plotW / 2 ? "end" : "start";
      out.push(`<line x1="${tx.toFixed(1)}" y1="${top}" x2="${tx.toFixed(1)}" y2="${height - bottom}" class="threshold"/>` +
        `<text x="${(tx + (anchor === "end" ? -3 : 3)).toFixed(1)}" y="${top - 6}" text-anchor="${anchor}" class="threshold">threshold</text>`);
    }
    out.push(`<text x="${labelW}" y="${height - 4}" class="tick">class logit →</text></svg>`);
    const bias = d.kind === "softmax" ? " (+ bias)" : "";
    return `<div class="csra-chart-legend"><span class="sw base"></span>base: average pooling${bias}` +
      `<span class="sw att"></span>λ × attention (λ = ${r.lam.toFixed(2)})<span class="sw logit"></span>logit</div>` + out.join("");
  }

  // Fixed-size tiles: the present classes (most probable first, at most max_tiles) and the picked ones.
  function shownClasses(r) {
    const d = S.data;
    const shown = r.present.slice(0, d.max_tiles);
    for (const i of d.picked || []) if (!shown.includes(i)) shown.push(i);
    return shown;
  }

  function tiles(r) {
    const d = S.data;
    const shown = shownClasses(r);
    if (!shown.length) return `<p class="csra-empty">No class at p ≥ ${r.thr.toFixed(2)}: lower the threshold or pick classes to show.</p>`;
    const items = shown.map((i) => {
      const src = S.tiles[i];
      const picture = src ? `<img src="${src}" alt="heatmap of ${esc(d.names[i])}">` : `<div class="csra-wait">drawing…</div>`;
      return `<button type="button" class="csra-tile" data-class="${i}" title="look closer at ${esc(d.names[i])}">${picture}` +
        `<span class="csra-caption"><b>${esc(d.names[i])}</b> p = ${r.probs[i].toFixed(3)} · logit ${r.logits[i] >= 0 ? "+" : ""}${r.logits[i].toFixed(2)}</span></button>`;
    }).join("");
    return `${S.legend || ""}<div class="csra-tiles">${items}</div>`;
  }

  function draw() {
    const r = compute();
    S.last = r;
    for (const el of S.scoreViews) {
      if (!el.isConnected) { S.scoreViews.delete(el); continue; }
      const q = (s) => el.querySelector(s);
      if (!r) { q(".csra-summary").innerHTML = ""; q(".csra-chart").innerHTML = ""; q(".csra-table").innerHTML = ""; continue; }
      q(".csra-summary").innerHTML = summary(r);
      q(".csra-chart").innerHTML = chart(r, q(".csra-chart").clientWidth);
      q(".csra-table").innerHTML = table(r);
    }
    for (const el of S.tileViews) {
      if (!el.isConnected) { S.tileViews.delete(el); continue; }
      el.querySelector(".csra-tiles-root").innerHTML = r ? tiles(r) : "";
    }
    window.dispatchEvent(new CustomEvent("csra-drawn"));
  }

  // Dimmed results while a new image is analysed: the class goes on our own inner elements
  // (Gradio may rewrite its components' own class attributes whenever they update).
  function stale(on) {
    for (const el of S.scoreViews) el.querySelector(".csra-explorer")?.classList.toggle("csra-stale", on);
    for (const el of S.tileViews) el.querySelector(".csra-tiles-root")?.classList.toggle("csra-stale", on);
  }

  function addTiles(value) {
    if (!value || typeof value !== "object" || !value.key) return false;
    if (value.key !== S.tileKey) { S.tiles = {}; S.tileKey = value.key; }
    Object.assign(S.tiles, value.tiles || {});
    if (value.legend !== undefined) S.legend = value.legend;
    if (value.picked && S.data) S.data.picked = value.picked;
    return true;
  }

  function paintKept(name) {   // again after Gradio redraws the element's template
    const view = S.kept[name];
    const root = view && view.el && view.el.querySelector(".csra-kept-root");
    if (root && root.csraHtml !== view.html) { root.innerHTML = view.html; root.csraHtml = view.html; }
  }

  let pending = false;
  function redraw() {  // at most once per animation frame, however fast the slider moves
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }

  const explorer = window.csraExplorer = {
    state: S, compute, draw,
    // The image box's value changed. A new file: until its numbers arrive, the summary says
    // so and the old results are dimmed (a still style, no animation: the browser shares the
    // cores with the network). The box reports one upload twice; the repeat is ignored.
    // Emptied (cleared, or refused by the server): back to what the page holds.
    analysing(file) {
      const path = (file && (file.path || file.url)) || null;
      if (path && path === S.pending) return;
      S.pending = path;
      stale(!!path);
      if (!path) { draw(); return; }
      for (const el of S.scoreViews) el.querySelector(".csra-summary").textContent = ANALYSING;
    },
    setData(value, tiles) {   // new numbers (and, from the page's own upload, their first tiles)
      stale(false);
      // a Gradio event sends the numbers as JSON text (app/ui.py scores_text); the upload
      // call's answer holds them already parsed
      const d = typeof value === "string" && value ? JSON.parse(value)
        : value && typeof value === "object" ? value : null;
      if (d && S.data && d.image !== S.data.image) { S.tiles = {}; S.tileKey = null; }
      S.data = d;
      if (!d) { S.tiles = {}; S.tileKey = null; S.legend = ""; }
      if (tiles) addTiles(tiles);
      draw();
    },
    setTiles(value) {
      if (addTiles(value)) draw();
    },
    // The close-up, the pooling weights, the map check: HTML from the server, kept while the
    // server answers None (nothing new; it arrives as "" or null: see app/ui.py, Memory).
    mountKept(element, name) {
      const view = S.kept[name] || (S.kept[name] = {html: "", el: null});
      view.el = element;
      paintKept(name);
    },
    setKept(name, value) {
      const view = S.kept[name] || (S.kept[name] = {html: "", el: null});
      if (typeof value === "string" && value !== "") view.html = value;
      paintKept(name);
    },
    setControls(controls) {   // Gradio's change event of a control, with its new value
      for (const k of ["alpha", "scale", "picked", "model"]) if (controls[k] !== undefined) S.controls[k] = controls[k];
      if (!["lam", "thr", "topk"].some((k) => controls[k] !== undefined)) return;
      for (const k of ["lam", "thr", "topk"]) if (controls[k] !== undefined) S[k] = controls[k];
      if (S.data) draw(); // synchronous: the numbers are on screen when the event returns
    },
    // The status line: plain text (file names are never read as markup); a leading ⚠️ marks
    // a message. The page's own upload sets it here and in the component's value.
    mountStatus(element, props) {
      S.statusViews.add(element);
      S.statusProps = props;
    },
    setStatus(text, own) {   // None from the server ("" or null here): the line stays
      text = text === null || text === undefined || text === "" ? S.status : String(text);
      S.status = text;
      for (const el of S.statusViews) {
        if (!el.isConnected) { S.statusViews.delete(el); continue; }
        const line = el.querySelector(".csra-status-line") || el;
        line.textContent = text;
        line.classList.toggle("csra-message", text.startsWith("⚠️"));
      }
      if (own && S.statusProps && S.statusProps.value !== text) S.statusProps.value = text;
    },
    // The page's own upload: the file goes through Gradio's upload route, then one call of
    // the scores view's server function answers with the status, numbers and first tiles.
    mountUpload(element, server, upload, value) {
      const root = element.querySelector(".csra-upload-root") || element;
      const examples = (value && value.examples) || [];
      const maxBytes = (value && value.max_bytes) || Infinity;
      const start = (value && value.controls) || {};   // the controls' values at page load
      S.lam = S.lam ?? start.lam ?? null; S.thr = S.thr ?? start.threshold ?? null;
      S.topk = S.topk ?? start.top_k ?? null;
      if (!S.controls.model) S.controls.model = start.model ?? null;
      root.innerHTML = `<label class="csra-drop"><input type="file" accept="image/*" ` +
        `aria-label="Upload an image"><img class="csra-preview" alt="" hidden>` +
        `<span class="csra-drop-text">Drop an image here, paste one, or click to upload</span></label>` +
        (examples.length ? `<div class="csra-examples" role="group" aria-label="Examples">` +
          `<p>Examples (click one)</p>` + examples.map((e) => `<button type="button" class="csra-example" ` +
          `data-name="${esc(e.name)}" aria-label="Example: ${esc(e.name)}" title="${esc(e.name)}">` +
          `<img src="${e.thumb}" alt=""></button>`).join("") + `</div>` : "");
      const zone = root.querySelector(".csra-drop"), input = root.querySelector("input");
      const preview = root.querySelector(".csra-preview");
      const thumbs = Object.fromEntries(examples.map((e) => [e.name, e.thumb]));
      const show = (src) => {
        if (preview.dataset.objectUrl) URL.revokeObjectURL(preview.dataset.objectUrl);
        preview.dataset.objectUrl = src.startsWith("blob:") ? src : "";
        preview.src = src; preview.hidden = false;
      };
      const send = async (request, name) => {
        const serial = ++S.sent;
        explorer.analysing({path: `${serial}:${name}`});
        const controls = {lam: S.lam ?? (S.data ? S.data.lam : null), threshold: S.thr ?? (S.data ? S.data.threshold : null),
                          top_k: S.topk ?? 20, ...S.controls};
        let out;
        const t = {start: performance.now()};    // where an upload's time goes (bench/browser_latency.py)
        try {
          if (request.file) {
            const sent = await upload(request.file);
            request = {path: sent.path, name};
          }
          t.uploaded = performance.now();
          // Gradio's session hash: the later Gradio events of this page find the analysis by it
          out = JSON.parse(await server.analyse_file({...request, ...controls, session: window.__gradio_session_hash__}));
          t.answered = performance.now();
        } catch (err) {
          out = {error: `${name}: could not be sent (${err && err.message ? err.message : err})`};
        }
        if (serial !== S.sent) return;            // a newer image was chosen meanwhile
        S.pending = null;
        if (!out || out.error) {
          stale(false);
          draw();
          explorer.setStatus(`⚠️ ${out ? out.error : name + ": no answer"}`, true);
          return;
        }
        S.tiles = {}; S.tileKey = null;
        explorer.setStatus(out.status, true);
        explorer.setData(out.scores, out.heatmaps);
        t.drawn = performance.now();
        S.timing = {upload_ms: t.uploaded - t.start, call_ms: t.answered - t.uploaded,
                    handler_ms: out.handler_ms, draw_ms: t.drawn - t.answered};
        if (S.trigger) setTimeout(() => S.trigger("change"), 0);  // close-up etc., after drawing
      };
      const sendFile = (file) => {
        if (!file) return;
        if (file.size > maxBytes) {
          explorer.setStatus(`⚠️ ${file.name}: ${(file.size / 1048576).toFixed(1)} MB is more than the ` +
                             `limit of ${(maxBytes / 1048576).toFixed(0)} MB`, true);
          return;
        }
        show(URL.createObjectURL(file));
        send({file}, file.name || "pasted image");
      };
      input.addEventListener("change", () => { sendFile(input.files[0]); input.value = ""; });
      zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("csra-over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("csra-over"));
      zone.addEventListener("drop", (e) => {
        e.preventDefault(); zone.classList.remove("csra-over");
        sendFile(e.dataTransfer && e.dataTransfer.files[0]);
      });
      root.addEventListener("click", (e) => {
        const b = e.target.closest(".csra-example");
        if (!b) return;
        show(thumbs[b.dataset.name]);
        send({example: b.dataset.name}, b.dataset.name);
      });
      // a pasted image anywhere on the page but in a text field: the same way as an upload
      document.addEventListener("paste", (e) => {
        if (e.target.closest && e.target.closest("input, textarea, [contenteditable], #csra-image")) return;
        const item = Array.from((e.clipboardData && e.clipboardData.items) || []).find((i) => i.type.startsWith("image/"));
        if (!item) return;
        e.preventDefault();
        const file = item.getAsFile();
        sendFile(new File([file], "pasted image", {type: file.type}));
      });
    },
    // The live camera tab: frames from getUserMedia, drawn into a canvas at the size the
    // server asks for, sent as JPEG to the tab's server function (app/live.py), one at a time:
    // the next frame leaves only once the previous answer is on screen, and it is the newest
    // one the camera has (nothing queues up). Each answer is the frame with the heatmap of
    // the top class (or of the picked classes) at the page's lambda, threshold, opacity and
    // colour scale, and the present classes' scores. One line says what went wrong (no
    // camera, permission refused, the camera stopped, the time limit); the rest of the page
    // is untouched.
    mountLive(element, server, value) {
      const root = element.querySelector(".csra-live-root") || element;
      const limit = (value && value.time_limit_s) || 300;
      const L = S.live = {run: 0, side: (value && value.side) || 320, frames: 0, shown: [], latency: [],
                          forward: [], handler: [], sent: [], encoded: [], answered: [], stream: null, track: null, meta: null,
                          seen: 0, sentSeen: -1, waiters: []};
      root.innerHTML = `<div class="csra-live-bar"><button type="button" class="csra-live-start">Start camera</button>` +
        `<button type="button" class="csra-live-stop" disabled>Stop</button>` +
        `<span class="csra-live-fps">0.0 frames/s</span></div>` +
        `<p class="csra-live-line" role="status" aria-live="polite">Press Start camera: each frame is scored at ` +
        `the page's λ and threshold, with the heatmap of the top class (or of the classes chosen in “also show ` +
        `these classes”) at the chosen opacity. A stream stops after ${Math.round(limit / 60)} minutes.</p>` +
        `<div class="csra-live-view"><img class="csra-live-overlay" alt="camera frame with the heatmap" hidden></div>` +
        `<p class="csra-live-scores"></p>`;
      const q = (s) => root.querySelector(s);
      const startButton = q(".csra-live-start"), stopButton = q(".csra-live-stop");
      const img = q(".csra-live-overlay"), fps = q(".csra-live-fps"), line = q(".csra-live-line");
      const scoresLine = q(".csra-live-scores");
      const video = document.createElement("video");
      video.muted = true; video.playsInline = true;
      const canvas = document.createElement("canvas");
      const say = (text) => {
        line.textContent = text;
        line.classList.toggle("csra-message", text.startsWith("⚠️"));
      };
      const keep = (list, v) => { list.push(v); if (list.length > 2000) list.shift(); };
      const showFps = () => {      // frames shown over the last 3 seconds
        const now = performance.now(), recent = L.shown.filter((t) => now - t < 3000);
        const rate = recent.length > 1 ? 1000 * (recent.length - 1) / (recent[recent.length - 1] - recent[0]) : 0;
        fps.textContent = `${rate.toFixed(1)} frames/s`;
        L.fps = rate;
      };
      const cameraError = (err) => {
        const name = (err && err.name) || "";
        if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError")
          return "⚠️ Camera permission refused: allow the camera for this page in the browser, then press Start camera again.";
        if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError")
          return "⚠️ No camera found: connect one, then press Start camera again.";
        if (name === "NotReadableError" || name === "TrackStartError" || name === "AbortError")
          return "⚠️ The camera could not be started: another program may be using it.";
        return `⚠️ The camera could not be started (${name || "error"}: ${(err && err.message) || err}).`;
      };
      const stop = (text) => {
        L.run++;                        // ends the running loop
        if (L.tracks) for (const t of L.tracks) t.stop();
        L.tracks = null;
        video.srcObject = null;
        for (const w of L.waiters.splice(0)) w();
        startButton.disabled = false; stopButton.disabled = true;
        fps.textContent = "0.0 frames/s"; L.fps = 0;
        if (text) say(text);
      };
      // the next camera frame not sent yet: {t: when it was captured or shown, in page time}
      const nextFrame = (run) => new Promise((resolve) => {
        const ready = () => L.run === run && L.seen !== L.sentSeen;
        if (ready()) { resolve(true); return; }
        const timer = setTimeout(() => resolve(ready()), 5000);
        L.waiters.push(() => { clearTimeout(timer); resolve(ready()); });
      });
      const watchFrames = (run) => {
        if (video.requestVideoFrameCallback) {
          const on = (now, meta) => {
            if (L.run !== run) return;
            L.seen++; L.meta = meta;
            for (const w of L.waiters.splice(0)) w();
            video.requestVideoFrameCallback(on);
          };
          video.requestVideoFrameCallback(on);
        } else {                        // no per-frame callback: every animation frame counts
          const on = () => {
            if (L.run !== run) return;
            L.seen++; L.meta = null;
            for (const w of L.waiters.splice(0)) w();
            requestAnimationFrame(on);
          };
          requestAnimationFrame(on);
        }
      };
      const loop = async (run, stream) => {
        while (L.run === run) {
          const fresh = await nextFrame(run);
          if (L.run !== run) return;
          if (fresh && L.seen === L.sentSeen) continue;     // the other sender took this frame
          if (!element.offsetParent || document.hidden) {   // nobody sees it: free the cores
            stop("Live camera stopped: its tab was left. Press Start camera to go on.");
            return;
          }
          if (!fresh) { stop("⚠️ The camera sends no pictures: live camera stopped."); return; }
          const meta = L.meta;
          L.sentSeen = L.seen;
          const seq = ++L.sentSeq;
          const t0 = meta ? (meta.captureTime ?? meta.presentationTime ?? performance.now()) : performance.now();
          const w = video.videoWidth, h = video.videoHeight;
          if (!w || !h) continue;
          const drawing = performance.now();
          const scale = Math.min(1, L.side / Math.max(w, h));
          canvas.width = Math.max(1, Math.round(w * scale)); canvas.height = Math.max(1, Math.round(h * scale));
          canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
          const frame = canvas.toDataURL("image/jpeg", 0.8);
          const sent = performance.now();
          const lam = unit(S.lam ?? (S.data ? S.data.lam : null), "λ", S.data ? S.data.lam : 0.1).v;
          const thr = unit(S.thr ?? (S.data ? S.data.threshold : null), "threshold", S.data ? S.data.threshold : 0.5).v;
          let out;
          try {
            out = JSON.parse(await server.live_frame({frame, session: window.__gradio_session_hash__, stream,
              lam, threshold: thr, alpha: S.controls.alpha, scale: S.controls.scale,
              picked: S.controls.picked || [], model: S.controls.model}));
          } catch (err) {
            if (L.run === run) stop(`⚠️ Live camera stopped: the server did not answer (${err && err.message ? err.message : err}).`);
            return;
          }
          const answered = performance.now();
          if (L.run !== run) return;
          if (out.stop) { stop(`⚠️ ${out.stop}`); return; }
          if (out.error) { stop(`⚠️ Live camera stopped: ${out.error}`); return; }
          if (out.replaced || seq < L.shownSeq) continue;   // a newer frame is on screen
          L.shownSeq = seq;
          img.src = out.overlay;
          try { await img.decode(); } catch (err) { /* shown anyway */ }
          if (L.run !== run) return;
          img.hidden = false;
          const shown = performance.now();
          L.frames++; L.side = out.side || L.side;
          keep(L.shown, shown); keep(L.latency, shown - t0); keep(L.forward, out.forward_ms); keep(L.handler, out.handler_ms);
          keep(L.sent, sent - t0); keep(L.encoded, sent - drawing);
          keep(L.answered, answered - sent);   // where the time goes (bench/live_fps.py)
          showFps();
          const present = out.present.map(([n, p]) => `${esc(n)} (${p.toFixed(2)})`).join(", ");
          scoresLine.innerHTML = `Heatmap: <b>${out.drawn.map(esc).join(", ")}</b>. Present at p ≥ ${out.threshold.toFixed(2)}: ` +
            (present || `none (top: ${esc(out.top[0])}, ${out.top[1].toFixed(2)})`) + `. λ = ${out.lam.toFixed(2)}.`;
          if (L.frames === 1) say(`Live: the model runs on every frame shown; ${Math.round(out.left_s / 60)} minutes left in this stream.`);
          L.lastAnswer = out;
        }
      };
      startButton.addEventListener("click", async () => {
        stop();
        const run = L.run;
        startButton.disabled = true; stopButton.disabled = false;
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          stop("⚠️ No camera access on this page: the browser offers the camera only over https or on localhost.");
          return;
        }
        say("Starting the camera…");
        let media;
        try {
          // no larger than the frames sent: the browser scales, so there is less to draw and encode
          media = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: L.side},
            height: {ideal: Math.round(L.side * 3 / 4)}}, audio: false});
        } catch (err) {
          if (L.run === run) stop(cameraError(err));
          return;
        }
        if (L.run !== run) { for (const t of media.getTracks()) t.stop(); return; }
        L.tracks = media.getTracks();
        for (const t of L.tracks) t.addEventListener("ended", () => {
          if (L.run === run) stop("⚠️ The camera stopped (unplugged, or taken by another program): live camera stopped.");
        });
        video.srcObject = media;
        try { await video.play(); } catch (err) { if (L.run === run) stop(cameraError(err)); return; }
        say("Camera on: the first frame is on its way…");
        L.seen = 0; L.sentSeen = -1; L.meta = null; L.sentSeq = 0; L.shownSeq = 0;
        watchFrames(run);
        // LIVE_IN_FLIGHT frames on their way at once: while the server runs the network on
        // one, the next is drawn, encoded and sent, and waits at the server (which keeps at
        // most one waiting frame a session); one at a time left the network idle between
        // an answer and the next frame's arrival
        const stream = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
        for (let i = 0; i < LIVE_IN_FLIGHT; i++) loop(run, stream);
      });
      stopButton.addEventListener("click", () => stop("Live camera stopped. Press Start camera to go on."));
      window.addEventListener("pagehide", () => stop());
    },
    mountScores(element, trigger) {
      S.scoreViews.add(element);
      if (trigger) S.trigger = trigger;
      if (!S.typedWatch) {  // a value typed into a slider's box (Enter or leaving it) fires no
        S.typedWatch = true;  // Gradio release event: ask for the pictures the same way
        document.addEventListener("change", (event) => {   // the box's own change: Enter, blur
          if (event.target.matches && event.target.matches(TYPED_BOXES) && S.data && S.trigger)
            setTimeout(() => S.trigger("change"), 0);   // its value is Gradio's by now (input)
        }, true);
      }
      if (window.ResizeObserver) {
        let w = 0;
        new ResizeObserver(() => {
          const c = element.querySelector(".csra-chart");
          if (c && c.clientWidth !== w) { w = c.clientWidth; redraw(); }
        }).observe(element);
      }
      draw();
    },
    mountTiles(element, trigger) {
      S.tileViews.add(element);
      const choose = (event) => {  // a tile clicked, or Enter on a focused tile: look closer
        const tile = event.target.closest(".csra-tile");
        if (tile && S.data && (event.type === "click" || event.key === "Enter")) {
          const i = Number(tile.dataset.class);
          trigger("select", {index: i, value: S.data.names[i], selected: true});
        }
      };
      element.addEventListener("click", choose);
      element.addEventListener("keydown", choose);
      draw();
    },
  };
})();
