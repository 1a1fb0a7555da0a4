/**
 * The heap map page's style sheet and script, inlined by renderHeapMap.
 * The script reads HEAPMAP_CONFIG and HEAPMAP_DATA (packed snapshots, see
 * render.ts) and draws: the arena map (a cell per page, data-cell set),
 * the legend, large blocks, the per-class table and fragmentation figures of
 * the snapshot the slider selects, the timeline (SVG), the time x address
 * view (canvas) and the by-site view (canvas). Plain ES2020, no libraries.
 * Written without backticks or dollar-brace, as it lives in a template string.
 */

export const CLIENT_CSS = String.raw`
body { font: 13px/1.4 system-ui, sans-serif; margin: 0 16px 24px; color: #222; background: #fafafa; }
header { display: flex; align-items: baseline; gap: 16px; }
h1 { font-size: 20px; margin: 12px 0 4px; } h2 { font-size: 15px; margin: 16px 0 6px; }
h3 { font-size: 13px; margin: 10px 0 4px; }
.hint { font-weight: normal; color: #777; font-size: 12px; }
#mode { color: #555; }
#map { display: flex; flex-wrap: wrap; gap: 1px; max-width: 1040px; }
.cell { position: relative; height: 18px; background: #e4e4e4; box-sizing: border-box; overflow: hidden; cursor: pointer; }
.cell > i { position: absolute; left: 0; right: 0; bottom: 0; display: block; }
.cell.retained { background: #fff; border: 1px dashed #888; }
.cell.released { background: repeating-linear-gradient(45deg, #d0d0d0 0 3px, #f4f4f4 3px 6px); }
.cell.metadata { background: #555; }
.cell.guard { background: #000; }
.cell.unused { background: #eee; color: #999; font-size: 10px; line-height: 18px; padding-left: 3px; }
.cell.selected { outline: 2px solid #000; z-index: 1; }
#legend { display: flex; flex-wrap: wrap; gap: 4px 10px; margin-bottom: 6px; max-width: 1040px; }
.key { display: inline-flex; align-items: center; gap: 3px; font-size: 11px; }
.key b { width: 12px; height: 12px; display: inline-block; border-radius: 2px; }
#large { display: flex; flex-wrap: wrap; gap: 2px; max-width: 1040px; min-height: 18px; }
.lblock { height: 18px; background: #8c564b; color: #fff; font-size: 10px; line-height: 18px; padding: 0 3px; overflow: hidden; white-space: nowrap; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
td, th { padding: 2px 8px; border-bottom: 1px solid #e3e3e3; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
#tooltip { position: fixed; pointer-events: none; background: #222; color: #fff; padding: 6px 8px; border-radius: 4px; font-size: 12px; display: none; white-space: pre; z-index: 10; }
#blocks { margin-top: 8px; }
#blocks canvas, #timeaddr, #sites { border: 1px solid #ccc; background: #fff; image-rendering: pixelated; }
#slider-row { display: flex; align-items: center; gap: 10px; margin-top: 4px; }
#slider { width: 640px; }
#site-stack { background: #fff; border: 1px solid #ddd; padding: 6px; max-width: 1040px; white-space: pre-wrap; min-height: 1em; }
.bar { display: inline-block; height: 10px; background: #4c78a8; vertical-align: middle; }
`;

export const CLIENT_JS = String.raw`
(function () {
  "use strict";
  var C = HEAPMAP_CONFIG, D = HEAPMAP_DATA, KINDS = C.kinds;
  var A = 0, BYTES = 1, KIND = 2, CLS = 3, LIVE = 4, CAP = 5, LBYTES = 6, COMMIT = 7, PURGED = 8, OWNER = 9, TOUCHED = 10, BLOCKS = 11;
  var UNIT = 65536, UNIT_PX = 8;
  var current = Math.min(C.initial, Math.max(0, D.length - 1));
  var selectedPage = -1, selectedSite = -1;
  var $ = function (id) { return document.getElementById(id); };

  function fmtBytes(n) {
    if (n < 1024) return n + " B";
    var u = ["KiB", "MiB", "GiB", "TiB"], i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
    return n.toFixed(1) + " " + u[i];
  }
  function pct(x) { return (100 * x).toFixed(1) + "%"; }
  function hex(n) { return "0x" + n.toString(16); }
  function classColor(c, light) {
    if (c < 0) return light ? "#c9dcc0" : "#59a14f";
    var h = (c * 137.508) % 360;
    return "hsl(" + h.toFixed(0) + ", " + (light ? "45%, 85%)" : "62%, 45%)");
  }
  function pageColor(p, light) { return KINDS[p[KIND]] === "fit" ? classColor(-1, light) : classColor(p[CLS], light); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function describe(p) {
    var kind = KINDS[p[KIND]];
    var lines = [kind + " page at " + hex(p[A]) + ", " + fmtBytes(p[BYTES])];
    if (kind === "class") lines.push("class " + p[CLS] + ", blocks of " + blockSizeOf(p) + " B");
    if (kind === "class" || kind === "fit") {
      lines.push("live " + p[LIVE] + " / " + p[CAP] + (kind === "fit" ? " chunks" : " blocks") + ", " + fmtBytes(p[LBYTES]) + " live");
      lines.push("committed " + fmtBytes(p[COMMIT]) + (p[PURGED] ? ", " + p[PURGED] + " OS pages given back" : ""));
      if (p[OWNER]) lines.push("owner Worker slot " + p[OWNER]);
    } else if (kind === "retained" || kind === "metadata") {
      lines.push("committed " + fmtBytes(p[COMMIT]));
    } else if (kind === "guard") {
      lines.push("inaccessible: a stray access past the page's end faults (secure mode)");
    } else if (kind === "released") {
      lines.push("given back to the OS (reserved, not committed)");
    } else {
      lines.push("address space not carved into pages yet");
    }
    return lines.join("\n");
  }
  function blockSizeOf(p) {
    var s = D[current], cls = p[CLS];
    for (var i = 0; i < s.classes.length; i++) if (s.classes[i].class === cls) return s.classes[i].blockSize;
    return p[CAP] ? Math.floor(p[BYTES] / p[CAP]) : 0;
  }
  function occupancy(p) {
    var kind = KINDS[p[KIND]];
    if (kind === "class") return p[CAP] ? p[LIVE] / p[CAP] : 0;
    if (kind === "fit") return p[LBYTES] / p[BYTES];
    return 0;
  }

  // ---- tooltip -------------------------------------------------------------
  var tip = $("tooltip");
  function showTip(ev, text) {
    tip.textContent = text; tip.style.display = "block";
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 320) + "px";
    tip.style.top = (ev.clientY + 14) + "px";
  }
  function hideTip() { tip.style.display = "none"; }

  // ---- header, legend ------------------------------------------------------
  function drawMode(s) {
    var m = s.mode, modes = [];
    if (m.secure) modes.push("secure"); if (m.debug) modes.push("debug"); if (m.shared) modes.push("shared");
    $("mode").textContent = (modes.length ? modes.join(", ") : "default") + " mode, " + D.length + " snapshot" + (D.length === 1 ? "" : "s");
  }
  function drawLegend() {
    var seen = {}, fit = false, legend = $("legend");
    legend.textContent = "";
    D.forEach(function (s) { s.pages.forEach(function (p) { if (KINDS[p[KIND]] === "class") seen[p[CLS]] = blockSizeIn(s, p[CLS]); else if (KINDS[p[KIND]] === "fit") fit = true; }); });
    function key(color, text, style) {
      var k = el("span", "key"), b = el("b");
      b.style.background = color; if (style) b.style.cssText += style;
      k.appendChild(b); k.appendChild(document.createTextNode(text)); legend.appendChild(k);
    }
    Object.keys(seen).map(Number).sort(function (a, b) { return a - b; }).forEach(function (c) { key(classColor(c), seen[c] + " B"); });
    if (fit) key(classColor(-1), "fit (any size > 1 KiB)");
    key("#fff", "retained (empty, committed)", "border: 1px dashed #888");
    key("repeating-linear-gradient(45deg, #d0d0d0 0 3px, #f4f4f4 3px 6px)", "released (given back)");
    key("#555", "metadata");
    if (D.some(function (s) { return s.mode.secure; })) key("#000", "guard page (secure mode)");
    key("#eee", "not carved yet");
    key("#8c564b", "large block (own mapping)");
  }
  function blockSizeIn(s, cls) {
    for (var i = 0; i < s.classes.length; i++) if (s.classes[i].class === cls) return s.classes[i].blockSize;
    return "class " + cls;
  }

  // ---- the arena map -------------------------------------------------------
  function drawMap(s) {
    var map = $("map");
    map.textContent = "";
    var frag = document.createDocumentFragment();
    s.pages.forEach(function (p, i) {
      var kind = KINDS[p[KIND]];
      var cell = el("div", "cell " + kind);
      cell.dataset.cell = String(i);
      var units = Math.max(1, Math.round(p[BYTES] / UNIT));
      if (kind === "unused") { units = Math.min(units, 32); cell.textContent = fmtBytes(p[BYTES]) + " free address space"; }
      if (kind === "metadata") units = Math.min(units, 4);
      cell.style.width = kind === "guard" ? "2px" : (units * UNIT_PX + (units - 1)) + "px";
      if (kind === "class" || kind === "fit") {
        cell.style.background = pageColor(p, true);
        var fill = el("i");
        fill.style.height = (100 * occupancy(p)).toFixed(1) + "%";
        fill.style.background = pageColor(p, false);
        cell.appendChild(fill);
      }
      if (i === selectedPage) cell.classList.add("selected");
      frag.appendChild(cell);
    });
    map.appendChild(frag);
    var large = $("large");
    large.textContent = "";
    if (s.large.length === 0) large.appendChild(el("span", "hint", "none"));
    s.large.forEach(function (b) {
      var box = el("div", "lblock", fmtBytes(b[1]));
      box.style.width = Math.max(24, Math.min(1000, Math.round(Math.log2(b[1] / 65536) * 40))) + "px";
      box.dataset.large = hex(b[0]);
      box.title = "large block at " + hex(b[0]) + "\n" + fmtBytes(b[1]) + " mapped, " + b[2] + " B asked" + (b[3] ? ", guard pages " + fmtBytes(b[3]) : "");
      large.appendChild(box);
    });
  }
  $("map").addEventListener("mousemove", function (ev) {
    var cell = ev.target.closest ? ev.target.closest(".cell") : null;
    if (!cell) return hideTip();
    showTip(ev, describe(D[current].pages[Number(cell.dataset.cell)]));
  });
  $("map").addEventListener("mouseleave", hideTip);
  $("map").addEventListener("click", function (ev) {
    var cell = ev.target.closest ? ev.target.closest(".cell") : null;
    if (!cell) return;
    selectedPage = Number(cell.dataset.cell);
    drawMap(D[current]); drawBlocks(D[current]);
  });

  // ---- blocks of the selected page -----------------------------------------
  function drawBlocks(s) {
    var box = $("blocks");
    box.textContent = "";
    var p = s.pages[selectedPage];
    if (!p) return;
    var kind = KINDS[p[KIND]];
    box.appendChild(el("h3", "", "Blocks of the " + kind + " page at " + hex(p[A])));
    if (kind !== "class" && kind !== "fit") { box.appendChild(el("div", "hint", "no blocks: " + describe(p).split("\n")[1])); return; }
    if (p.length <= BLOCKS) { box.appendChild(el("div", "hint", "this snapshot has no per-block state: take it with heap.snapshot({ blocks: true })")); return; }
    var canvas = el("canvas"), g;
    if (kind === "class") {
      var cap = p[CAP], cols = Math.min(cap, 128), size = cap > 1024 ? 7 : cap > 64 ? 12 : 28;
      canvas.width = cols * size; canvas.height = Math.ceil(cap / cols) * size;
      g = canvas.getContext("2d");
      for (var i = 0; i < cap; i++) {
        var live = (parseInt(p[BLOCKS].charAt(i >> 2), 16) >> (i & 3)) & 1;
        g.fillStyle = live ? pageColor(p, false) : i < p[TOUCHED] ? "#d8d8d8" : "#f6f6f6";
        g.fillRect((i % cols) * size, Math.floor(i / cols) * size, size - 1, size - 1);
      }
      box.appendChild(el("div", "hint", cap + " blocks of " + blockSizeOf(p) + " B: coloured live, grey freed, pale never handed out"));
    } else {
      var chunks = p[BLOCKS], width = 1024, rowBytes = p[BYTES] / 16;
      canvas.width = width; canvas.height = 16 * 14;
      g = canvas.getContext("2d");
      var offset = 0;
      chunks.forEach(function (c) {
        var bytes = Math.abs(c);
        g.fillStyle = c > 0 ? pageColor(p, false) : "#e8e8e8";
        for (var at = offset; at < offset + bytes;) {
          var row = Math.floor(at / rowBytes), rowEnd = (row + 1) * rowBytes, end = Math.min(offset + bytes, rowEnd);
          var x0 = (at - row * rowBytes) / rowBytes * width, x1 = (end - row * rowBytes) / rowBytes * width;
          g.fillRect(x0, row * 14, Math.max(1, x1 - x0 - 1), 13);
          at = end;
        }
        offset += bytes;
      });
      box.appendChild(el("div", "hint", chunks.length + " chunks, a row per 64 KiB: coloured live blocks, grey free chunks"));
    }
    box.appendChild(canvas);
  }

  // ---- figures and class table ---------------------------------------------
  function drawFigures(s) {
    var f = s.fragmentation, st = s.stats, t = $("figures");
    var rows = [
      ["allocated", fmtBytes(st.allocatedBytes), "usable bytes of live blocks"],
      ["committed", fmtBytes(st.committedBytes), "bytes that may be resident"],
      ["utilization", pct(f.utilization), "allocated / committed"],
      ["stranded in partly used pages", fmtBytes(f.strandedBytes), "free blocks in pages that hold live ones"],
      ["idle committed", fmtBytes(f.idleCommittedBytes), "committed bytes of in-use pages holding no live block"],
      ["retained", fmtBytes(st.retainedBytes), "empty pages kept committed"],
      ["largest free run", fmtBytes(f.largestFreeRunBytes), "consecutive empty pages below the carved top"],
      ["free-space fragmentation", pct(f.freeSpaceFragmentation), "1 - largest free run / empty page bytes"],
      ["largest free fit chunk", fmtBytes(f.largestFreeChunkBytes), "biggest fit block without a new page"],
      ["pages: partly used / full / empty", f.partlyUsedPages + " / " + f.fullPages + " / " + f.emptyPages, ""],
      ["live blocks", String(st.liveBlocks), ""],
      ["large blocks", st.largeBlocks + ", " + fmtBytes(st.largeBytes), "own mappings"],
    ];
    t.textContent = "";
    var head = t.insertRow(); ["figure", "value", "meaning"].forEach(function (h) { head.appendChild(el("th", "", h)); });
    rows.forEach(function (r) { var tr = t.insertRow(); r.forEach(function (v) { tr.insertCell().textContent = v; }); });
    var ct = $("classes");
    ct.textContent = "";
    var h2 = ct.insertRow();
    ["class", "block", "pages", "live", "free", "committed", "utilization", "tail waste", "rounding (at most)"].forEach(function (h) { h2.appendChild(el("th", "", h)); });
    s.classes.forEach(function (c) {
      var tr = ct.insertRow(), u = c.committed ? c.live * c.blockSize / c.committed : 0;
      var sw = el("span", "key"); var b = el("b"); b.style.background = classColor(c.class); sw.appendChild(b); sw.appendChild(document.createTextNode(String(c.class)));
      tr.insertCell().appendChild(sw);
      [c.blockSize + " B", c.pages, c.live, c.free, fmtBytes(c.committed)].forEach(function (v) { tr.insertCell().textContent = String(v); });
      var cell = tr.insertCell(), bar = el("span", "bar"); bar.style.width = Math.round(60 * Math.min(1, u)) + "px";
      cell.appendChild(bar); cell.appendChild(document.createTextNode(" " + pct(u)));
      tr.insertCell().textContent = fmtBytes(c.tailBytes);
      tr.insertCell().textContent = fmtBytes(c.maxRoundingBytes);
    });
  }

  // ---- timeline ------------------------------------------------------------
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) { var e = document.createElementNS(SVG, tag); for (var k in attrs) e.setAttribute(k, attrs[k]); return e; }
  function drawTimeline() {
    var box = $("timeline"); box.textContent = "";
    var W = 900, H = 180, L = 60, R = 50, T = 10, B = 24, n = D.length;
    var root = svg("svg", { width: W, height: H, id: "timeline-chart", role: "img" });
    var max = 1; D.forEach(function (s) { max = Math.max(max, s.stats.committedBytes, s.stats.allocatedBytes); });
    var x = function (i) { return L + (n <= 1 ? 0 : i * (W - L - R) / (n - 1)); };
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    var yu = function (u) { return T + (H - T - B) * (1 - u); };
    root.appendChild(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#ccc" }));
    [0, 0.5, 1].forEach(function (f) {
      var t = svg("text", { x: L - 4, y: y(max * f) + 4, "text-anchor": "end", "font-size": 10 }); t.textContent = fmtBytes(Math.round(max * f)); root.appendChild(t);
      var t2 = svg("text", { x: W - R + 4, y: yu(f) + 4, "font-size": 10, fill: "#e15759" }); t2.textContent = Math.round(f * 100) + "%"; root.appendChild(t2);
    });
    function line(values, scale, color, name, dash) {
      var d = values.map(function (v, i) { return (i ? "L" : "M") + x(i).toFixed(1) + " " + scale(v).toFixed(1); }).join(" ");
      root.appendChild(svg("path", { d: d, fill: "none", stroke: color, "stroke-width": 1.5, "stroke-dasharray": dash || "", "data-series": name }));
    }
    if (n > 0) {
      line(D.map(function (s) { return s.stats.committedBytes; }), y, "#4c78a8", "committed");
      line(D.map(function (s) { return s.stats.allocatedBytes; }), y, "#f58518", "allocated");
      line(D.map(function (s) { return s.stats.utilization; }), yu, "#e15759", "utilization", "4 2");
    }
    var keys = [["#4c78a8", "committed"], ["#f58518", "allocated"], ["#e15759", "utilization (right axis)"]];
    keys.forEach(function (k, i) {
      root.appendChild(svg("rect", { x: L + 10 + i * 150, y: H - 14, width: 10, height: 10, fill: k[0] }));
      var t = svg("text", { x: L + 24 + i * 150, y: H - 5, "font-size": 11 }); t.textContent = k[1]; root.appendChild(t);
    });
    var marker = svg("line", { id: "timeline-marker", x1: x(current), x2: x(current), y1: T, y2: H - B, stroke: "#000", "stroke-width": 1 });
    root.appendChild(marker);
    root.addEventListener("click", function (ev) {
      var r = root.getBoundingClientRect(), i = Math.round((ev.clientX - r.left - L) / ((W - L - R) / Math.max(1, n - 1)));
      select(Math.max(0, Math.min(n - 1, i)));
    });
    box.appendChild(root);
  }

  // ---- time x address ------------------------------------------------------
  function drawTimeAddress() {
    var canvas = $("timeaddr"), n = D.length;
    if (n === 0) return;
    var lo = D[0].arena.dataStart, hi = lo + UNIT;
    D.forEach(function (s) { hi = Math.max(hi, s.arena.dataStart + s.arena.carvedUnits * UNIT); });
    var rows = 256, colW = Math.max(1, Math.min(40, Math.floor(900 / n)));
    canvas.width = n * colW; canvas.height = rows;
    var g = canvas.getContext("2d"), span = (hi - lo) / rows;
    D.forEach(function (s, col) {
      var live = new Float64Array(rows), used = new Float64Array(rows), kindAt = new Int8Array(rows).fill(-1);
      s.pages.forEach(function (p) {
        var kind = KINDS[p[KIND]];
        if (kind === "metadata" || kind === "unused" || kind === "guard") return;
        var start = p[A], end = p[A] + p[BYTES], density = kind === "class" || kind === "fit" ? p[LBYTES] / p[BYTES] : 0;
        for (var r = Math.max(0, Math.floor((start - lo) / span)); r < rows && lo + r * span < end; r++) {
          var a = Math.max(start, lo + r * span), b = Math.min(end, lo + (r + 1) * span);
          if (b <= a) continue;
          used[r] += b - a; live[r] += density * (b - a);
          if (kind === "class" || kind === "fit") kindAt[r] = 1; else if (kindAt[r] < 0) kindAt[r] = kind === "retained" ? 2 : 3;
        }
      });
      for (var r = 0; r < rows; r++) {
        var color;
        if (used[r] === 0) color = "#f2f2f2";
        else if (kindAt[r] === 1) { var f = live[r] / used[r]; color = "hsl(" + Math.round(240 - 240 * f) + ", 80%, " + Math.round(88 - 40 * f) + "%)"; }
        else color = kindAt[r] === 2 ? "#c8c8c8" : "#dcdcdc";
        g.fillStyle = color;
        g.fillRect(col * colW, rows - 1 - r, colW, 1);
      }
    });
    $("timeaddr-axis").textContent = "addresses " + hex(lo) + " (bottom) to " + hex(hi) + " (top), " + fmtBytes(span) + " a row";
    g.fillStyle = "rgba(0,0,0,0.6)";
    g.fillRect(current * colW, 0, Math.max(1, colW), 4);
  }

  // ---- by allocation site --------------------------------------------------
  var siteHits = [];
  function siteSnapshot() {
    if (D[current] && D[current].sites) return current;
    for (var i = D.length - 1; i >= 0; i--) if (D[i].sites) return i;
    return -1;
  }
  function drawSites() {
    var section = $("sites-section"), idx = siteSnapshot();
    if (idx < 0) { section.style.display = "none"; return; }
    section.style.display = "";
    var s = D[idx], sites = s.sites, canvas = $("sites"), last = D[D.length - 1];
    var survivors = {};
    if (last.sites) for (var k = 0; k < last.sites.blocks.length; k += 4) survivors[last.sites.blocks[k] + ":" + last.sites.blocks[k + 3]] = 1;
    var rowsByPage = {}, order = [];
    var sorted = []; for (var j = 0; j < sites.blocks.length; j += 4) sorted.push(j);
    sorted.sort(function (a, b) { return sites.blocks[a] - sites.blocks[b]; });
    var pi = 0;
    var pages = s.pages;
    sorted.forEach(function (j) {
      var addr = sites.blocks[j];
      while (pi < pages.length && pages[pi][A] + pages[pi][BYTES] <= addr) pi++;
      var p = pi < pages.length && addr >= pages[pi][A] ? pages[pi] : null;
      var key = p ? String(p[A]) : "large:" + addr;
      if (!rowsByPage[key]) { rowsByPage[key] = { start: p ? p[A] : addr, bytes: p ? p[BYTES] : Math.max(sites.blocks[j + 1], 1), blocks: [] }; order.push(key); }
      rowsByPage[key].blocks.push(j);
    });
    var W = 900, RH = 10, maxRows = 400, shown = order.slice(0, maxRows);
    canvas.width = W; canvas.height = Math.max(1, shown.length) * RH;
    var g = canvas.getContext("2d");
    siteHits = [];
    var leaks = 0, highlighted = 0;
    shown.forEach(function (key, row) {
      var r = rowsByPage[key];
      g.fillStyle = "#f3f3f3"; g.fillRect(0, row * RH, W, RH - 1);
      r.blocks.forEach(function (j) {
        var addr = sites.blocks[j], size = sites.blocks[j + 1], site = sites.blocks[j + 2];
        var x0 = (addr - r.start) / r.bytes * W, w = Math.max(2, size / r.bytes * W);
        var dim = selectedSite >= 0 && site !== selectedSite;
        g.fillStyle = dim ? "#ddd" : classColor(site * 7 + 3);
        g.fillRect(x0, row * RH, w, RH - 1);
        if (!dim && selectedSite >= 0) highlighted++;
        if (survivors[addr + ":" + sites.blocks[j + 3]]) leaks++;
        if (survivors[addr + ":" + sites.blocks[j + 3]] && !dim) { g.strokeStyle = "#d00"; g.lineWidth = 1.5; g.strokeRect(x0 + 0.5, row * RH + 0.5, Math.max(1, w - 1), RH - 2); }
        siteHits.push([x0, row * RH, w, RH, j]);
      });
    });
    canvas.dataset.blocks = String(siteHits.length);
    canvas.dataset.leaks = String(leaks);
    canvas.dataset.highlighted = String(highlighted);
    var legend = $("sites-legend"); legend.textContent = "";
    var counts = {}; for (var q = 0; q < sites.blocks.length; q += 4) counts[sites.blocks[q + 2]] = (counts[sites.blocks[q + 2]] || 0) + sites.blocks[q + 1];
    Object.keys(counts).map(Number).sort(function (a, b) { return counts[b] - counts[a]; }).slice(0, 12).forEach(function (site) {
      var key = el("span", "key"), b = el("b"); b.style.background = classColor(site * 7 + 3);
      var first = (sites.stacks[site] || "(no stack)").split("\n").filter(function (l) { return l.indexOf("tsmalloc") < 0 && l.trim(); })[0] || sites.stacks[site] || "(no stack)";
      key.appendChild(b); key.appendChild(document.createTextNode(fmtBytes(counts[site]) + " " + first.trim().slice(0, 70)));
      legend.appendChild(key);
    });
    legend.appendChild(el("span", "hint", "snapshot " + (idx + 1) + ": " + sites.blocks.length / 4 + " live blocks from " + sites.stacks.length + " sites" + (order.length > maxRows ? ", first " + maxRows + " pages shown" : "")));
  }
  $("sites").addEventListener("click", function (ev) {
    var idx = siteSnapshot(); if (idx < 0) return;
    var r = ev.target.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top, sites = D[idx].sites;
    for (var i = 0; i < siteHits.length; i++) {
      var h = siteHits[i];
      if (x >= h[0] && x <= h[0] + h[2] && y >= h[1] && y < h[1] + h[3]) {
        var j = h[4];
        selectedSite = sites.blocks[j + 2];
        $("site-stack").textContent = "block at " + hex(sites.blocks[j]) + ", " + sites.blocks[j + 1] + " B, allocation #" + sites.blocks[j + 3] + "\n" + (sites.stacks[selectedSite] || "(no stack recorded)");
        drawSites();
        return;
      }
    }
    selectedSite = -1; $("site-stack").textContent = ""; drawSites();
  });

  // ---- the slider ----------------------------------------------------------
  var slider = $("slider");
  function select(i) {
    current = i; slider.value = String(i);
    var s = D[i];
    $("slider-label").textContent = "snapshot " + (i + 1) + " of " + D.length + (s.label ? ": " + s.label : "") + " (" + new Date(s.time).toISOString().slice(11, 23) + ")";
    drawMode(s); drawMap(s); drawBlocks(s); drawFigures(s); drawSites();
    var marker = document.getElementById("timeline-marker");
    if (marker) drawTimeline();
    drawTimeAddress();
    document.body.dataset.current = String(i);
  }
  slider.addEventListener("input", function () { select(Number(slider.value)); });
  function drawAll() {
    slider.max = String(Math.max(0, D.length - 1));
    $("timeline-section").style.display = "";
    drawLegend(); drawTimeline();
    if (D.length > 0) select(current);
  }
  drawAll();
  document.body.dataset.ready = "1";

  // ---- live view -----------------------------------------------------------
  if (C.live > 0) {
    var follow = true;
    slider.addEventListener("input", function () { follow = Number(slider.value) === D.length - 1; });
    var poll = function () {
      fetch("snapshot.json", { cache: "no-store" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (s) {
        if (s) {
          D.push(s); if (D.length > 600) D.shift();
          if (follow) current = D.length - 1;
          drawAll();
        }
      }).catch(function () {}).then(function () { setTimeout(poll, C.live); });
    };
    setTimeout(poll, D.length ? C.live : 0);
  }
})();
`;
