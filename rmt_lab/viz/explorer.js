// The attention explorer's view, drawn on canvases in the browser (anywidget ES module).
//
// The same module runs in two hosts: in Jupyter, `model` is the anywidget model and maps come from
// the kernel as binary messages; in a page written by `save_html`, `model` is a small object over
// blocks inlined in the page (`answerNeed`). Either way the view asks for the maps it must draw with
// model.send({type: "need", sample, segment, layer, maps: ["mean" | head, ...]}) and receives them as
// a "maps" message, one buffer a map, so there is one code path.
//
// A block is one (sample, segment, layer): every kept head plus their mean, each a map of uint8 in
// the sqrt domain: q = round(255 * sqrt(a / scale)), a = scale * (q / 255)^2 (see explorer.py). The
// colour scale is sqrt too, so the 256 levels of q are the colour levels and no decoding is needed to
// draw. The browser fills a block in map by map: the maps a change draws first, the rest while the
// user looks (`prefetch`).
//
// A view of one map waits for it, the last frame staying up. The grid paints at once: the heads it holds, and
// a placeholder for each other head, filled in as its map comes. A map the kernel could not send (its reply
// carries an `error`) is drawn as that reason, in the tile or in place of the map, until the user chooses the
// view again, which asks for it again. The root element says what the canvas shows: data-painted, the view of
// the last frame (maybe with placeholders); data-placeholders, the heads still shown as placeholders;
// data-failed, {map: reason} of the shown maps that could not be sent; data-drawn, the last view drawn whole.
// Tests and the benchmark wait on them.

const MEMORY = "#d55e00"; // memory positions, as in the matplotlib figures
const FACT = "#0072b2"; // fact tokens
const SPECIAL = "#555555"; // [CLS], [SEP]
const PLACEHOLDER = "#ececec", PLACEHOLDER_TEXT = "#888888"; // a grid tile whose map is on its way
const FAILED = "#fbe4dc", FAILED_TEXT = "#a3300f"; // a map the kernel could not send: its reason
const FAILED_LINE = 13; // px between the lines of a reason, in FONT
const FONT = "10px sans-serif";
const LABEL_PX = 11; // a label needs this many pixels along its axis, so labels never overlap
const MAX_ZOOM_CELL = 48; // largest cell, in CSS pixels
const CACHE_BLOCKS = 8; // blocks kept (the view and its 4 neighbours fit); 522 positions x 13 maps: 3.5 MB at most
const TL_X0 = 96, TL_TOP = 12, TL_LANE = 18; // timeline: room for lane names, fact marks, lane height
const TL_MIN_SPAN = 8; // the timeline zooms in to this many segments, ~80 px each

function isMemory(label) {
  return label.startsWith("[mem ") || label.startsWith("[read ") || label.startsWith("[write ");
}
function isSpecial(label) {
  return label.startsWith("[") && label.endsWith("]") && !isMemory(label);
}
function short(label, n = 14) {
  return label.length > n ? label.slice(0, n - 1) + "…" : label;
}
function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function select(name, options, value) {
  const wrap = el("label", { class: "rmt-control" }, name + " ");
  const box = el("select", { name });
  for (const [text, v] of options) {
    const o = el("option", { value: String(v) }, text);
    box.appendChild(o);
  }
  box.value = String(value);
  wrap.appendChild(box);
  return [wrap, box];
}

// Bytes inlined as base64 (the timeline in the widget state, blocks in a standalone page).
function base64Bytes(text) {
  const raw = atob(text), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
// Bytes [start, start + length) of those a base64 text holds, decoding only the groups (4 characters, 3 bytes) that
// hold them: a standalone page decodes the map a view asks for, not the 13 of its block.
function base64Slice(text, start, length) {
  const first = Math.floor(start / 3), last = Math.ceil((start + length) / 3);
  return base64Bytes(text.slice(4 * first, 4 * last)).subarray(start - 3 * first, start - 3 * first + length);
}
// A message buffer as a Uint8Array (Jupyter hands over DataViews).
function asBytes(buf) {
  return buf instanceof Uint8Array ? buf : new Uint8Array(buf.buffer || buf, buf.byteOffset || 0, buf.byteLength);
}

function blockKey(sample, segment, layer) {
  return `${sample}/${segment}/${layer}`;
}
// Map names: "mean" (the mean of heads) or a head as text; a block's order is the mean, then each head.
function mapNames(heads) {
  return ["mean", ...heads.map(String)];
}

// A block from the header of its first "maps" message (labels, facts, heads); its maps are added as they arrive.
function makeBlock(header) {
  const memory = [], maps = new Map(), scales = new Map();
  header.labels.forEach((lab, i) => { if (isMemory(lab)) memory.push(i); });
  return { n: header.n, heads: header.heads, labels: header.labels, memory, factSet: new Set(header.facts),
           images: new Map(),
           add(name, bytes, scale) { maps.set(name, bytes); scales.set(name, scale); },
           has: (name) => maps.has(name), map: (name) => maps.get(name), scale: (name) => scales.get(name) };
}

// The standalone page's answer to a `need`, from a block inlined whole (`header`, with scales in block order, and
// `mapBytes(i)`, the bytes of its map i): the named maps (default: all), or an error naming what the page holds.
function answerNeed(msg, header, mapBytes) {
  const key = { type: "maps", sample: msg.sample, segment: msg.segment, layer: msg.layer };
  if (!header) {
    return [{ ...key, maps: msg.maps || [], error: "this page holds no map of that view: "
                                                   + "save_html(path, segments=..., layers=..., samples=...)" }, []];
  }
  const all = mapNames(header.heads), names = (msg.maps || all).map(String);
  const unknown = names.find((name) => !all.includes(name));
  if (unknown !== undefined) {
    return [{ ...key, maps: names, error: `head ${unknown} has no map in segment ${msg.segment}` }, []];
  }
  const index = names.map((name) => all.indexOf(name));
  return [{ ...key, n: header.n, heads: header.heads, labels: header.labels, facts: header.facts, maps: names,
            scales: index.map((i) => header.scales[i]) },
          index.map(mapBytes)];
}

// Four significant digits: at 512 positions most weights sit near 0.002, where fixed decimals tell none apart.
function formatWeight(w) {
  return w === 0 ? "0" : w.toPrecision(4);
}
function weight(block, name, q) {
  const v = q / 255;
  return block.scale(name) * v * v;
}

// `text` in lines at most `width` px wide in ctx's font, `most` lines at most (the last then ends in "…"); a
// word wider than that (a file path) is cut wherever it must be.
function wrapText(ctx, text, width, most) {
  const fits = (t) => ctx.measureText(t).width <= width;
  const lines = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (fits(line ? `${line} ${word}` : word)) { line = line ? `${line} ${word}` : word; continue; }
    if (line) lines.push(line);
    line = word;
    while (!fits(line) && line.length > 1) {
      let k = line.length - 1;
      while (k > 1 && !fits(line.slice(0, k))) k--;
      lines.push(line.slice(0, k));
      line = line.slice(k);
    }
  }
  if (line) lines.push(line);
  if (lines.length <= most) return lines;
  let last = lines[most - 1];
  while (last && !fits(last + "…")) last = last.slice(0, -1);
  return [...lines.slice(0, most - 1), last + "…"];
}

// An n x n canvas of one map, coloured through the colormap: the drawing step only scales it.
function mapImage(block, name, cmap) {
  if (block.images.has(name)) return block.images.get(name);
  const n = block.n, q = block.map(name);
  const root = Math.sqrt(block.scale(name));
  const lut = new Uint32Array(256); // q -> RGBA; colour index = 255 * sqrt(a) = sqrt(scale) * q
  for (let k = 0; k < 256; k++) {
    const [r, g, b] = cmap[Math.min(255, Math.round(root * k))];
    lut[k] = (255 << 24) | (b << 16) | (g << 8) | r; // little-endian RGBA
  }
  const canvas = document.createElement("canvas");
  canvas.width = n; canvas.height = n;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(n, n);
  const pixels = new Uint32Array(image.data.buffer);
  for (let i = 0; i < n * n; i++) pixels[i] = lut[q[i]];
  ctx.putImageData(image, 0, 0);
  block.images.set(name, canvas);
  return canvas;
}

function render({ model, el: host }) {
  const meta = model.get("meta");
  const cmap = meta.cmap;
  const root = el("div", { class: "rmt-explorer" });
  root.style.cssText = "font: 12px sans-serif; color: #222; user-select: none;";
  host.appendChild(root);

  // ------------------------------------------------------------------ controls
  const bar = el("div", { class: "rmt-controls" });
  bar.style.cssText = "display:flex; gap:12px; flex-wrap:wrap; align-items:center; margin-bottom:6px;";
  const segLabel = (s, sample) => (meta.fact_segments[String(sample)] || []).includes(s) ? `${s} (fact)` : String(s);
  const [segWrap, segBox] = select("segment", meta.segments.map((s) => [segLabel(s, model.get("sample")), s]),
                                   model.get("segment"));
  const [layWrap, layBox] = select("layer", meta.layers.map((l) => [String(l), l]), model.get("layer"));
  const headOptions = [["mean of heads", "mean"], ["all heads (grid)", "grid"],
                       ...meta.heads.map((h) => [`head ${h}`, String(h)])];
  const [headWrap, headBox] = select("head", headOptions, model.get("head"));
  const [samWrap, samBox] = select("sample", meta.samples.map((b) => [String(b), b]), model.get("sample"));
  const reset = el("button", { type: "button", class: "rmt-reset" }, "full map");
  const memButton = el("button", { type: "button", class: "rmt-memory" }, "memory block");
  bar.append(segWrap, layWrap, headWrap, samWrap, reset, memButton);
  root.appendChild(bar);

  const stage = el("div");
  stage.style.cssText = "display:flex; flex-wrap:wrap; gap:12px; align-items:flex-start;";
  const holder = el("div");
  holder.style.cssText = "position:relative;";
  const canvas = el("canvas", { class: "rmt-heatmap" });
  const overlay = el("canvas", { class: "rmt-overlay" });
  overlay.style.cssText = "position:absolute; left:0; top:0; cursor:crosshair;";
  holder.append(canvas, overlay);
  const side = el("div", { class: "rmt-pinned" });
  side.style.cssText = "min-width:220px; max-width:260px; font-size:12px;";
  stage.append(holder, side);
  root.appendChild(stage);
  const readout = el("div", { class: "rmt-readout" });
  readout.style.cssText = "min-height:18px; margin:4px 0; font-family: monospace; white-space: pre;";
  root.appendChild(readout);
  const timeline = el("canvas", { class: "rmt-timeline" });
  timeline.style.cssText = "cursor:pointer;";
  root.appendChild(timeline);
  const tlNote = el("div", { class: "rmt-timeline-note" });
  tlNote.style.cssText = "min-height:16px; color:#333; font-family: monospace; white-space: pre-wrap; user-select: text;";
  root.appendChild(tlNote);
  const note = el("div", { class: "rmt-note" });
  note.style.cssText = "min-height:16px; color:#555;";
  root.appendChild(note);

  const W = meta.width || 760, H = W, ML = 100, MT = 100;
  const TL_W = W - TL_X0 - 8, TL_H = meta.timeline ? TL_TOP + meta.timeline.lanes.length * TL_LANE + 22 : 0;
  const dpr = window.devicePixelRatio || 1;
  for (const [c, w, h] of [[canvas, W, H], [overlay, W, H], [timeline, W, TL_H]]) {
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    c.style.width = w + "px"; c.style.height = h + "px";
  }
  const ctx = canvas.getContext("2d");
  const octx = overlay.getContext("2d");
  const tctx = timeline.getContext("2d");

  // ------------------------------------------------------------------ state
  const cache = new Map(); // blockKey -> block, most recently used last
  const waiting = new Map(); // blockKey -> names of the maps asked for that have not arrived
  const failed = new Map(); // "blockKey/name" -> why the kernel could not send that map: asked for again only
                            // when the user chooses its view again (`forgetFailures`), never by a redraw or prefetch
  let view = { x0: 0, y0: 0, cells: 0 }; // window: first column/row and cells across, in positions
  let pinned = null; // pinned query row
  let hover = null;

  const current = () => ({ sample: Number(samBox.value), segment: Number(segBox.value),
                           layer: Number(layBox.value), head: headBox.value });
  const keyOf = (v) => blockKey(v.sample, v.segment, v.layer);
  const viewName = (c) => `${c.sample}/${c.segment}/${c.layer}/${c.head}`;
  // The maps a view draws: one, or for the grid every head, then the mean (whose rows a pinned query lists):
  // the kernel answers in the order asked, and the grid paints each head as it comes.
  function shownMaps(head, block) {
    return head === "grid" ? [...(block ? block.heads : meta.heads).map(String), "mean"] : [head];
  }
  const holds = (block, name) => block !== undefined && block.has(name);
  // The shown block, if the view draws from it now: a view of one map once it holds that map; the grid whatever
  // it holds (none of it, before the block's first map comes).
  function currentBlock() {
    const c = current(), block = cache.get(keyOf(c));
    return c.head === "grid" || holds(block, c.head) ? block : undefined;
  }
  function headText(head) { return head === "mean" ? "mean of heads" : `head ${head}`; }
  const failure = (v, name) => failed.get(`${keyOf(v)}/${name}`);
  function forgetFailures(v) {
    const prefix = `${keyOf(v)}/`;
    for (const k of [...failed.keys()]) if (k.startsWith(prefix)) failed.delete(k);
  }

  function remember(key, block) {
    cache.delete(key); cache.set(key, block);
    while (cache.size > CACHE_BLOCKS) cache.delete(cache.keys().next().value);
  }
  // Of `names` in the block of view `v`, those neither held nor asked for.
  function lacking(v, names) {
    const block = cache.get(keyOf(v)), asked = waiting.get(keyOf(v));
    return names.filter((name) => !(block && block.has(name)) && !(asked && asked.has(name)));
  }
  function ask(v, names) {
    const key = keyOf(v), asked = waiting.get(key) || new Set();
    names.forEach((name) => asked.add(name));
    waiting.set(key, asked);
    model.send({ type: "need", sample: v.sample, segment: v.segment, layer: v.layer, maps: names });
  }

  model.on("msg:custom", (msg, buffers) => {
    if (!msg || msg.type !== "maps") return;
    const key = keyOf(msg), asked = waiting.get(key);
    if (asked) { msg.maps.forEach((name) => asked.delete(name)); if (!asked.size) waiting.delete(key); }
    const c = current(), shown = key === keyOf(c);
    if (msg.error) {
      msg.maps.forEach((name) => failed.set(`${key}/${name}`, msg.error));
      const lost = shown ? shownMaps(c.head, cache.get(key)).filter((name) => msg.maps.includes(name)) : [];
      if (lost.length && c.head === "grid") { fill(cache.get(key), lost); note.textContent = msg.error; }
      else if (lost.length) draw(); // a failed prefetch is not news
      prefetchSoon(0);
      return;
    }
    const fresh = !cache.has(key), block = cache.get(key) || makeBlock(msg);
    msg.maps.forEach((name, i) => {
      block.add(name, asBytes(buffers[i]), msg.scales[i]);
      failed.delete(`${key}/${name}`);
    });
    remember(key, block);
    // A grid painted before its block's first map came knows no positions yet: that map redraws it whole.
    if (!shown || root.dataset.drawn === viewName(c)) prefetchSoon(0);
    else if (c.head === "grid" && !fresh) fill(block, msg.maps);
    else if (currentBlock()) draw();
  });

  // While the user looks, fill in the maps the next change will probably draw: the other maps of the shown
  // block (head changes), then the shown map of the neighbouring segments and layers, then their other maps.
  // One map a request, and only while nothing is in flight: the kernel answers messages in order, so a change
  // the user makes waits behind one map at most (522 positions: 272 KB).
  let prefetchTimer = null;
  function prefetchSoon(delay = 50) { // after a draw, wait for the frame: answering a request takes the thread
    clearTimeout(prefetchTimer);
    prefetchTimer = setTimeout(prefetch, delay);
  }
  function prefetch() {
    if (waiting.size) return;
    const c = current(), si = meta.segments.indexOf(c.segment), li = meta.layers.indexOf(c.layer);
    const near = [[meta.segments[si + 1], c.layer], [c.segment, meta.layers[li + 1]], [meta.segments[si - 1], c.layer],
                  [c.segment, meta.layers[li - 1]]]
      .filter(([segment, layer]) => segment !== undefined && layer !== undefined)
      .map(([segment, layer]) => ({ sample: c.sample, segment, layer }));
    const every = (v) => mapNames(cache.has(keyOf(v)) ? cache.get(keyOf(v)).heads : meta.heads);
    const plan = [[c, every(c)], ...near.map((v) => [v, shownMaps(c.head, cache.get(keyOf(v)))]),
                  ...near.map((v) => [v, every(v)])];
    for (const [v, names] of plan) {
      const name = lacking(v, names).find((n) => !failed.has(`${keyOf(v)}/${n}`));
      if (name !== undefined) { ask(v, [name]); return; }
    }
  }

  // ------------------------------------------------------------------ geometry
  const plot = () => {
    if (headBox.value !== "grid") return [{ x: ML, y: MT, size: Math.min(W - ML - 8, H - MT - 8) }];
    const heads = (currentBlock() || meta).heads, cols = Math.ceil(Math.sqrt(heads.length));
    const size = Math.floor((W - 8 - (cols - 1) * 10) / cols) - 0;
    return heads.map((h, i) => ({ x: (i % cols) * (size + 10), y: 18 + Math.floor(i / cols) * (size + 22),
                                  size, head: h }));
  };
  // A grid tile without its map: on its way (a placeholder), or failed (drawn as the reason).
  const lacksMap = (block, r) => r.head !== undefined && !holds(block, String(r.head));
  const placeholder = (block, r) => lacksMap(block, r) && failure(current(), String(r.head)) === undefined;
  function clampView(n) {
    view.cells = Math.min(n, Math.max(view.cells || n, Math.min(n, 4)));
    view.x0 = Math.min(Math.max(view.x0, 0), n - view.cells);
    view.y0 = Math.min(Math.max(view.y0, 0), n - view.cells);
  }
  function hit(px, py) { // canvas CSS pixels -> {row, col, rect} or null
    const block = currentBlock();
    if (!block) return null;
    for (const r of plot()) {
      if (px < r.x || py < r.y || px >= r.x + r.size || py >= r.y + r.size) continue;
      if (lacksMap(block, r)) return null;
      const cell = r.size / view.cells;
      const col = Math.floor(view.x0 + (px - r.x) / cell), row = Math.floor(view.y0 + (py - r.y) / cell);
      if (row >= 0 && col >= 0 && row < block.n && col < block.n) return { row, col, rect: r };
    }
    return null;
  }

  // ------------------------------------------------------------------ drawing
  function drawMap(block, name, r) {
    const cell = r.size / view.cells;
    ctx.save();
    ctx.beginPath(); ctx.rect(r.x, r.y, r.size, r.size); ctx.clip();
    ctx.imageSmoothingEnabled = cell < 1; // shrinking: average; enlarging: crisp cells
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(mapImage(block, name, cmap), view.x0, view.y0, view.cells, view.cells, r.x, r.y, r.size, r.size);
    if (block.memory.length) { // outline the memory block
      const m0 = block.memory[0], m1 = block.memory[block.memory.length - 1] + 1;
      ctx.strokeStyle = MEMORY; ctx.setLineDash([4, 3]); ctx.lineWidth = 1;
      ctx.strokeRect(r.x + (m0 - view.x0) * cell, r.y + (m0 - view.y0) * cell, (m1 - m0) * cell, (m1 - m0) * cell);
    }
    ctx.restore();
  }
  // In the square `r`, why its map could not be sent, wrapped to the square (the note below holds it whole).
  function drawFailure(r, why) {
    ctx.save();
    ctx.fillStyle = FAILED; ctx.fillRect(r.x, r.y, r.size, r.size);
    ctx.font = FONT; ctx.fillStyle = FAILED_TEXT; ctx.textAlign = "left"; ctx.textBaseline = "top";
    const lines = wrapText(ctx, `could not load this map: ${why}`, r.size - 12,
                           Math.max(1, Math.floor((r.size - 12) / FAILED_LINE)));
    lines.forEach((line, i) => ctx.fillText(line, r.x + 6, r.y + 6 + i * FAILED_LINE));
    ctx.restore();
  }
  // A grid tile's square: its map, a placeholder while the map is on its way, or why it could not be sent.
  function drawTileBody(block, r) {
    const why = failure(current(), String(r.head));
    if (!lacksMap(block, r)) drawMap(block, String(r.head), r);
    else if (why !== undefined) drawFailure(r, why);
    else {
      ctx.fillStyle = PLACEHOLDER; ctx.fillRect(r.x, r.y, r.size, r.size);
      ctx.fillStyle = PLACEHOLDER_TEXT; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText("loading…", r.x + r.size / 2, r.y + r.size / 2);
    }
  }
  function drawTile(block, r) { // its square and its title above it
    drawTileBody(block, r);
    ctx.fillStyle = "#222"; ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
    ctx.fillText(`head ${r.head}`, r.x, r.y - 4);
  }
  function markColor(block, i) {
    const lab = block.labels[i];
    if (isMemory(lab)) return MEMORY;
    if (block.factSet.has(i)) return FACT;
    if (isSpecial(lab)) return SPECIAL;
    return null;
  }
  function drawAxes(block, r) {
    // Marks: a coloured strip beside every memory, fact and special position, at any zoom.
    const cell = r.size / view.cells;
    const first = Math.floor(view.x0), last = Math.min(block.n, Math.ceil(view.x0 + view.cells));
    const firstR = Math.floor(view.y0), lastR = Math.min(block.n, Math.ceil(view.y0 + view.cells));
    for (const [lo, hi, axis] of [[first, last, "x"], [firstR, lastR, "y"]]) {
      for (let i = lo; i < hi; i++) {
        const color = markColor(block, i);
        if (!color) continue;
        ctx.fillStyle = color;
        const at = (i - (axis === "x" ? view.x0 : view.y0)) * cell;
        const w = Math.max(cell, 1.5);
        if (axis === "x") ctx.fillRect(r.x + Math.max(at, 0), r.y - 7, Math.min(w, r.size - Math.max(at, 0)), 5);
        else ctx.fillRect(r.x - 7, r.y + Math.max(at, 0), 5, Math.min(w, r.size - Math.max(at, 0)));
      }
      // Labels: marked positions first, then the others wherever there is room.
      const taken = new Uint8Array(Math.ceil(r.size) + 1);
      const order = [];
      for (let i = lo; i < hi; i++) if (markColor(block, i)) order.push(i);
      for (let i = lo; i < hi; i++) if (!markColor(block, i)) order.push(i);
      ctx.font = FONT;
      for (const i of order) {
        const centre = ((i + 0.5) - (axis === "x" ? view.x0 : view.y0)) * cell;
        if (centre < 0 || centre > r.size) continue;
        const a = Math.max(0, Math.floor(centre - LABEL_PX / 2)), b = Math.min(taken.length, Math.ceil(centre + LABEL_PX / 2));
        let free = true;
        for (let p = a; p < b && free; p++) if (taken[p]) free = false;
        if (!free) continue;
        taken.fill(1, a, b);
        ctx.fillStyle = markColor(block, i) || "#222";
        const text = short(block.labels[i]);
        if (axis === "y") {
          ctx.textAlign = "right"; ctx.textBaseline = "middle";
          ctx.fillText(text, r.x - 10, r.y + centre);
        } else {
          ctx.save(); ctx.translate(r.x + centre, r.y - 10); ctx.rotate(-Math.PI / 2);
          ctx.textAlign = "left"; ctx.textBaseline = "middle"; ctx.fillText(text, 0, 0); ctx.restore();
        }
      }
    }
    ctx.fillStyle = "#444"; ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
    ctx.fillText("keys →", 4, 12); ctx.fillText("queries ↓", 4, 26);
  }

  // Marks what the canvas shows (see the top of this file).
  function mark() {
    const c = current(), block = cache.get(keyOf(c));
    root.dataset.placeholders = JSON.stringify(c.head === "grid" ? plot().filter((r) => placeholder(block, r))
                                                                     .map((r) => String(r.head)) : []);
    const lost = shownMaps(c.head, block).filter((name) => failure(c, name) !== undefined);
    root.dataset.failed = JSON.stringify(Object.fromEntries(lost.map((name) => [name, failure(c, name)])));
    root.dataset.painted = viewName(c);
    if (shownMaps(c.head, block).every((name) => holds(block, name))) root.dataset.drawn = viewName(c);
  }

  function draw() {
    const c = current(), shown = shownMaps(c.head, cache.get(keyOf(c)));
    const missing = lacking(c, shown).filter((name) => failure(c, name) === undefined);
    if (missing.length) ask(c, missing); // the kernel answers with one message a map
    const block = currentBlock(), lost = c.head === "grid" ? undefined : failure(c, c.head);
    if (!block && c.head !== "grid" && lost === undefined) {
      note.textContent = "loading…";
      return;
    }
    if (block) { remember(keyOf(c), block); clampView(block.n); }
    note.textContent = shown.map((name) => failure(c, name)).find((why) => why !== undefined) || "";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const rects = plot();
    if (c.head === "grid") {
      ctx.font = FONT;
      for (const r of rects) drawTile(block, r);
    } else if (block) {
      drawMap(block, c.head, rects[0]);
      drawAxes(block, rects[0]);
    } else drawFailure(rects[0], lost);
    root.dataset.plot = JSON.stringify({ ...rects[0], n: block && block.n, x0: view.x0, y0: view.y0, cells: view.cells,
                                         tiles: c.head === "grid" ? rects : undefined });
    mark();
    drawOverlay();
    drawPinned();
    drawTimeline();
    prefetchSoon();
  }

  // Maps of the shown grid came (or failed) while it is up: each replaces its placeholder (the title stays), the
  // rest stays.
  function fill(block, names) {
    for (const r of plot()) {
      if (!names.includes(String(r.head))) continue;
      ctx.clearRect(r.x, r.y, r.size, r.size);
      drawTileBody(block, r);
    }
    mark();
    drawOverlay();
    if (names.includes("mean")) drawPinned(); // the grid's pinned row lists the mean's top keys
    prefetchSoon();
  }

  function drawOverlay() {
    octx.setTransform(dpr, 0, 0, dpr, 0, 0);
    octx.clearRect(0, 0, W, H);
    const block = currentBlock();
    if (!block) return;
    for (const r of plot()) {
      if (lacksMap(block, r)) continue;
      const cell = r.size / view.cells;
      octx.save(); octx.beginPath(); octx.rect(r.x, r.y, r.size, r.size); octx.clip();
      if (pinned !== null) {
        octx.strokeStyle = "#e69f00"; octx.lineWidth = 2; octx.setLineDash([]);
        octx.strokeRect(r.x - 1, r.y + (pinned - view.y0) * cell, r.size + 2, Math.max(cell, 1));
      }
      if (hover) {
        octx.strokeStyle = "rgba(0,0,0,0.55)"; octx.lineWidth = 1;
        octx.strokeRect(r.x, r.y + (hover.row - view.y0) * cell, r.size, Math.max(cell, 1));
        octx.strokeRect(r.x + (hover.col - view.x0) * cell, r.y, Math.max(cell, 1), r.size);
      }
      octx.restore();
    }
  }

  function describe(block, h) {
    const c = current();
    const head = c.head === "grid" ? String(h.rect.head) : c.head;
    const q = block.map(head)[h.row * block.n + h.col];
    const w = weight(block, head, q);
    return `query ${h.row} ${JSON.stringify(block.labels[h.row])} → key ${h.col} ${JSON.stringify(block.labels[h.col])}` +
           `   weight ${formatWeight(w)}   segment ${c.segment} · layer ${c.layer} · ${headText(head)} · sample ${c.sample}`;
  }

  function drawPinned() {
    side.textContent = "";
    const block = currentBlock(), c = current();
    const head = c.head === "grid" ? "mean" : c.head;
    if (!block || pinned === null || !block.has(head)) {
      const why = failure(c, head);
      side.appendChild(el("div", { style: "color:#777" }, pinned === null
        ? "click a cell to pin its query row and list its top keys"
        : why === undefined ? "loading…" : `could not load the ${headText(head)}: ${why}`));
      return;
    }
    const row = block.map(head).subarray(pinned * block.n, (pinned + 1) * block.n);
    const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a]).slice(0, 12);
    side.appendChild(el("div", { style: "font-weight:bold; margin-bottom:4px" },
                        `query ${pinned} ${block.labels[pinned]} (${headText(head)}): top keys`));
    const table = el("table", { class: "rmt-topkeys" });
    for (const k of order) {
      const tr = el("tr");
      const w = weight(block, head, row[k]);
      const name = el("td", {}, `${k} ${short(block.labels[k], 18)}`);
      const color = markColor(block, k);
      if (color) name.style.color = color;
      const barCell = el("td");
      const barDiv = el("div");
      barDiv.style.cssText = `background:#4c72b0; height:8px; width:${Math.round(80 * w)}px`;
      barCell.appendChild(barDiv);
      tr.append(name, el("td", { style: "text-align:right; font-family:monospace" }, formatWeight(w)), barCell);
      table.appendChild(tr);
    }
    side.appendChild(table);
  }

  // ------------------------------------------------------------------ timeline over all segments
  // Lanes of the summaries (explorer.py, _timeline) for the shown sample and layer. It has its own window of
  // segments (wheel: zoom, drag: pan, double-click: all), so each of thousands of segments can be reached;
  // zoomed out, a pixel column covers several segments and draws their range (band) and mean (line).
  const tl = meta.timeline;
  const laneColors = ["#0072b2", "#d55e00", "#009e73", "#cc79a7"];
  const tlSeries = new Map(); // sample -> Uint8Array (lanes, layers, segments)
  let tview = { s0: 0, span: tl ? tl.n_segments : 1 }; // segments shown: [s0, s0 + span)
  const tlX = (s) => TL_X0 + (s - tview.s0) / tview.span * TL_W;
  const tlSegmentAt = (px) => Math.min(tl.n_segments - 1, Math.max(0, Math.floor(tview.s0 + (px - TL_X0) / TL_W * tview.span)));
  function series(sample, lane, layer) { // levels of 1/254, 255: no value
    if (!tlSeries.has(sample)) tlSeries.set(sample, base64Bytes(tl.samples[String(sample)].data));
    const n = tl.n_segments, li = tl.layers.indexOf(layer);
    return tlSeries.get(sample).subarray((lane * tl.layers.length + li) * n, (lane * tl.layers.length + li + 1) * n);
  }
  function clampTimeline() {
    tview.span = Math.min(tl.n_segments, Math.max(tview.span, Math.min(tl.n_segments, TL_MIN_SPAN)));
    tview.s0 = Math.min(Math.max(tview.s0, 0), tl.n_segments - tview.span);
  }
  function drawTimeline() {
    tctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    tctx.clearRect(0, 0, W, TL_H);
    if (!tl) return;
    clampTimeline();
    const c = current(), facts = tl.samples[String(c.sample)].facts;
    const laneH = TL_LANE - 4;
    tctx.font = FONT; tctx.textBaseline = "middle";
    tl.lanes.forEach((name, lane) => {
      const top = TL_TOP + lane * TL_LANE, y = (q) => top + TL_LANE - 2 - q / 254 * laneH;
      tctx.fillStyle = "#f4f4f4"; tctx.fillRect(TL_X0, top + 1, TL_W, TL_LANE - 2);
      tctx.fillStyle = laneColors[lane]; tctx.textAlign = "right"; tctx.fillText(name, TL_X0 - 6, top + TL_LANE / 2);
      const values = series(c.sample, lane, c.layer);
      const band = new Path2D(), line = new Path2D();
      let open = false;
      for (let px = 0; px < TL_W; px++) { // the segments [a, b) under pixel column px
        const a = Math.floor(tview.s0 + px / TL_W * tview.span);
        const b = Math.max(a + 1, Math.ceil(tview.s0 + (px + 1) / TL_W * tview.span));
        let lo = 255, hi = -1, sum = 0, count = 0;
        for (let s = a; s < b && s < tl.n_segments; s++) {
          const q = values[s];
          if (q === 255) continue;
          lo = Math.min(lo, q); hi = Math.max(hi, q); sum += q; count++;
        }
        if (!count) { open = false; continue; }
        if (hi > lo) band.rect(TL_X0 + px, y(hi), 1, y(lo) - y(hi));
        open ? line.lineTo(TL_X0 + px + 0.5, y(sum / count)) : line.moveTo(TL_X0 + px + 0.5, y(sum / count));
        open = true;
      }
      tctx.globalAlpha = 0.35; tctx.fillStyle = laneColors[lane]; tctx.fill(band); tctx.globalAlpha = 1;
      tctx.strokeStyle = laneColors[lane]; tctx.lineWidth = 1.2; tctx.stroke(line);
    });
    const inView = (s) => s >= tview.s0 - 1 && s < tview.s0 + tview.span + 1;
    const centre = (s) => tlX(s + 0.5);
    tctx.save(); tctx.beginPath(); tctx.rect(TL_X0 - 4, 0, TL_W + 8, TL_H); tctx.clip();
    tctx.fillStyle = FACT;
    for (const s of facts) {
      if (!inView(s)) continue;
      tctx.beginPath(); tctx.moveTo(centre(s) - 4, 1); tctx.lineTo(centre(s) + 4, 1); tctx.lineTo(centre(s), TL_TOP - 2); tctx.fill();
    }
    const axis = TL_TOP + tl.lanes.length * TL_LANE;
    tctx.fillStyle = "#222";
    for (const s of meta.segments) if (inView(s)) tctx.fillRect(centre(s) - 0.5, axis + 1, 1, 5);
    const picked = model.get("picked");
    if (inView(picked)) {
      tctx.fillStyle = "rgba(0,0,0,0.12)";
      tctx.fillRect(tlX(picked), TL_TOP, Math.max(tlX(picked + 1) - tlX(picked), 1), axis - TL_TOP);
      tctx.strokeStyle = "#000"; tctx.setLineDash([3, 2]); tctx.beginPath();
      tctx.moveTo(centre(picked), TL_TOP); tctx.lineTo(centre(picked), axis + 6); tctx.stroke(); tctx.setLineDash([]);
    }
    tctx.restore();
    const last = Math.min(tl.n_segments, Math.ceil(tview.s0 + tview.span)) - 1;
    tctx.fillStyle = "#444"; tctx.textBaseline = "alphabetic";
    tctx.textAlign = "left";
    tctx.fillText(`segments ${Math.floor(tview.s0)}–${last} of ${tl.n_segments} · layer ${c.layer}, mean of heads, 0–1`, TL_X0, TL_H - 2);
    tctx.textAlign = "right";
    tctx.fillText("▼ fact  ┃ map kept  · wheel: zoom, drag: pan, double-click: all", W - 8, TL_H - 2);
    root.dataset.timeline = JSON.stringify({ x: TL_X0, width: TL_W, top: TL_TOP, bottom: axis, s0: tview.s0,
                                             span: tview.span, n: tl.n_segments, picked });
  }
  function describeSegment(s) {
    const c = current(), fact = tl.samples[String(c.sample)].facts.includes(s) ? " (fact)" : "";
    const parts = tl.lanes.map((name, lane) => {
      const q = series(c.sample, lane, c.layer)[s];
      return `${name} ${q === 255 ? "–" : (q / 254).toFixed(3)}`;
    });
    return `segment ${s}${fact}: ${parts.join(" · ")} · ${meta.segments.includes(s) ? "map kept" : "no map kept"}`;
  }
  function pick(s) {
    model.set("picked", s); model.save_changes();
    if (meta.segments.includes(s)) {
      if (Number(segBox.value) !== s) { segBox.value = String(s); changed("segment"); } else drawTimeline();
      tlNote.textContent = describeSegment(s);
      return;
    }
    drawTimeline();
    tlNote.textContent = `segment ${s} kept no full map; this records it:\n` +
                         meta.record_command.replaceAll("{segment}", String(s));
  }
  let tdrag = null;
  if (tl) {
    timeline.addEventListener("wheel", (e) => {
      e.preventDefault();
      const at = tview.s0 + (e.offsetX - TL_X0) / TL_W * tview.span; // stays under the cursor
      const span = Math.min(tl.n_segments, Math.max(TL_MIN_SPAN, tview.span * Math.exp(e.deltaY * 0.0015)));
      tview = { s0: at - (at - tview.s0) * span / tview.span, span };
      drawTimeline();
    }, { passive: false });
    timeline.addEventListener("mousedown", (e) => { tdrag = { x: e.offsetX, s0: tview.s0, moved: false }; });
    window.addEventListener("mouseup", () => { if (tdrag && !tdrag.moved) tdrag = null; });
    timeline.addEventListener("mousemove", (e) => {
      if (tdrag && (e.buttons & 1)) {
        const dx = e.offsetX - tdrag.x;
        if (Math.abs(dx) > 3) tdrag.moved = true;
        if (tdrag.moved) { tview.s0 = tdrag.s0 - dx / TL_W * tview.span; drawTimeline(); return; }
      }
      if (e.offsetX >= TL_X0 && e.offsetX < TL_X0 + TL_W) tlNote.textContent = describeSegment(tlSegmentAt(e.offsetX));
    });
    timeline.addEventListener("click", (e) => {
      const moved = tdrag && tdrag.moved;
      tdrag = null;
      if (moved || e.offsetX < TL_X0 || e.offsetX >= TL_X0 + TL_W) return;
      pick(tlSegmentAt(e.offsetX));
    });
    timeline.addEventListener("dblclick", () => { tview = { s0: 0, span: tl.n_segments }; drawTimeline(); });
    model.on("change:picked", () => { // set from Python, e.g. by a linked MemoryDynamics slider
      const s = model.get("picked");
      if (s < tview.s0 || s >= tview.s0 + tview.span) tview.s0 = s - tview.span / 2;
      drawTimeline();
    });
  }

  // ------------------------------------------------------------------ interaction
  function changed(name) {
    model.set(name, name === "head" ? headBox.value : Number({ segment: segBox, layer: layBox, sample: samBox }[name].value));
    forgetFailures(current()); // choosing a view again asks again for what it could not get
    if (name === "segment") model.set("picked", Number(segBox.value)); // the timeline marks the map's segment
    if (name === "sample" || name === "segment") pinned = null;
    if (name === "sample") for (const o of segBox.options) o.textContent = segLabel(Number(o.value), Number(samBox.value));
    draw(); // before the state goes to the kernel, which answers messages in order: the maps the view lacks first
    model.save_changes();
  }
  segBox.addEventListener("change", () => changed("segment"));
  layBox.addEventListener("change", () => changed("layer"));
  headBox.addEventListener("change", () => changed("head"));
  samBox.addEventListener("change", () => changed("sample"));
  for (const name of ["segment", "layer", "head", "sample"]) {
    model.on(`change:${name}`, () => {
      const box = { segment: segBox, layer: layBox, head: headBox, sample: samBox }[name];
      if (box.value === String(model.get(name))) return;
      box.value = String(model.get(name));
      forgetFailures(current());
      draw();
    });
  }
  let syncTimer = null;
  function syncWindow() { // the kernel's figure() draws the same window; tell it once the user stops moving
    clearTimeout(syncTimer);
    syncTimer = setTimeout(() => {
      const x0 = Math.floor(view.x0), y0 = Math.floor(view.y0);
      model.set("window", [y0, Math.ceil(view.y0 + view.cells), x0, Math.ceil(view.x0 + view.cells)]);
      model.save_changes();
    }, 250);
  }
  function setWindow(x0, y0, cells) {
    view = { x0, y0, cells };
    draw();
    syncWindow();
  }
  reset.addEventListener("click", () => { const b = currentBlock(); if (b) setWindow(0, 0, b.n); });
  memButton.addEventListener("click", () => {
    const b = currentBlock();
    if (!b || !b.memory.length) { note.textContent = "no memory positions in this map"; return; }
    const m0 = Math.max(0, b.memory[0] - 1), cells = b.memory[b.memory.length - 1] + 2 - m0;
    setWindow(m0, m0, cells);
  });

  overlay.addEventListener("wheel", (e) => {
    const block = currentBlock(), h = hit(e.offsetX, e.offsetY);
    if (!block || !h) return;
    e.preventDefault();
    const r = h.rect, cell = r.size / view.cells;
    const fx = view.x0 + (e.offsetX - r.x) / cell, fy = view.y0 + (e.offsetY - r.y) / cell; // stays under the cursor
    const minCells = Math.max(2, r.size / MAX_ZOOM_CELL);
    const cells = Math.min(block.n, Math.max(minCells, view.cells * Math.exp(e.deltaY * 0.0015)));
    const k = cells / view.cells;
    setWindow(fx - (fx - view.x0) * k, fy - (fy - view.y0) * k, cells);
  }, { passive: false });

  let drag = null;
  overlay.addEventListener("mousedown", (e) => {
    const h = hit(e.offsetX, e.offsetY);
    if (h) drag = { x: e.offsetX, y: e.offsetY, x0: view.x0, y0: view.y0, cell: h.rect.size / view.cells, moved: false };
  });
  window.addEventListener("mouseup", () => { if (drag && drag.moved) syncWindow(); });
  overlay.addEventListener("mousemove", (e) => {
    if (drag && (e.buttons & 1)) {
      const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) { view.x0 = drag.x0 - dx / drag.cell; view.y0 = drag.y0 - dy / drag.cell; draw(); return; }
    }
    const block = currentBlock(), h = hit(e.offsetX, e.offsetY);
    hover = h;
    readout.textContent = block && h ? describe(block, h) : "";
    drawOverlay();
  });
  overlay.addEventListener("mouseleave", () => { hover = null; readout.textContent = ""; drawOverlay(); });
  overlay.addEventListener("click", (e) => {
    const moved = drag && drag.moved;
    drag = null;
    if (moved) return;
    const h = hit(e.offsetX, e.offsetY);
    if (!h) return;
    if (headBox.value === "grid") { headBox.value = String(h.rect.head); changed("head"); }
    pinned = pinned === h.row ? null : h.row;
    drawOverlay(); drawPinned();
  });
  overlay.addEventListener("dblclick", () => reset.click());

  draw();
  return () => { clearTimeout(syncTimer); clearTimeout(prefetchTimer); };
}

export default { render };
