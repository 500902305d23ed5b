// The interactive data map: a WebGL scatter (regl-scatterplot) of
// variability × confidence with hover, lasso and box selection, filters, CSV
// export and a review mode for suspects. Used by OUT/datamap.html (datamap.js,
// data embedded in the file) and by the live page (live.js, data fetched and
// redrawn after every committed epoch). A map's data:
//   meta   JSON: title, n, epochs, label_names, columns {name: [offset, type]}, suspects, most_predicted, note
//   buf    an ArrayBuffer holding the columns (little endian) from byte `base`
//   texts  each point's text (or [] when the dataset has none)
//   ids    each point's id as text (or [])
import createScatterplot from 'regl-scatterplot';

const $ = (id) => document.getElementById(id);

// Viridis at 5 stops, the PNG map's palette for "epochs predicted correctly".
const VIRIDIS = ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725'];

// k colours along viridis, interpolated between its stops.
function palette(k) {
  if (k <= 1) return [VIRIDIS[4]];
  const rgb = (h) => [1, 3, 5].map((o) => parseInt(h.slice(o, o + 2), 16));
  return Array.from({ length: k }, (_, i) => {
    const t = (i / (k - 1)) * (VIRIDIS.length - 1);
    const lo = Math.floor(t);
    const hi = Math.min(VIRIDIS.length - 1, lo + 1);
    const [a, b] = [rgb(VIRIDIS[lo]), rgb(VIRIDIS[hi])];
    return '#' + a.map((v, j) => Math.round(v + (b[j] - v) * (t - lo)).toString(16).padStart(2, '0')).join('');
  });
}

export function decodeColumns(meta, buf, base = 0) {
  const cols = {};
  for (const [name, [offset, type]] of Object.entries(meta.columns)) {
    const T = { f32: Float32Array, i32: Int32Array, u8: Uint8Array }[type];
    cols[name] = new T(buf, base + offset, meta.n);
  }
  return cols;
}

function csvField(v) {
  const s = String(v ?? '');
  return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

function download(name, rows) {
  const blob = new Blob([rows.map((r) => r.map(csvField).join(',')).join('\n') + '\n'], { type: 'text/csv' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  // Tests read the last export here.
  window.cartoLastExport = { name, rows };
}

// Draws `data` into the page's #plot and wires the panel; returns
// { update(data) } to redraw with a new map of the same job (the points move
// to their new places when their number is unchanged).
export async function mountMap(data) {
  // The current map; every handler below reads these.
  let meta, cols, n, sid, point, predictedOf, textOf, idOf, names, maxVar, x, y, z, buckets, density;
  const labelName = (k) => names[k] ?? String(k);
  const load = (d) => {
    meta = d.meta;
    cols = decodeColumns(meta, d.buf, d.base || 0);
    n = meta.n;
    // Point i is sample i, or sample_id[i] on a sampled page; the most
    // predicted class is known for suspects.
    const sampled = cols.sample_id;
    sid = sampled ? (i) => sampled[i] : (i) => i;
    const pointOf = sampled ? new Map(Array.from(sampled, (s, i) => [s, i])) : null;
    point = (s) => (pointOf ? pointOf.get(s) : s);
    const predicted = new Map(meta.most_predicted);
    predictedOf = { has: (i) => predicted.has(sid(i)), get: (i) => predicted.get(sid(i)) };
    // Empty when the dataset has no text / no id column: the id is the sample_id.
    const textList = d.texts || [];
    const idList = d.ids || [];
    textOf = (i) => (textList.length ? textList[i] : '');
    idOf = (i) => (idList.length ? idList[i] : String(sid(i)));
    names = meta.label_names;
    $('title').textContent = meta.title;
    $('note').textContent = meta.note || '';
    // Axes: variability on x (0 … its maximum), confidence on y (0 … 1), both mapped to [-1, 1].
    maxVar = Math.max(1e-9, cols.variability.reduce((m, v) => (v > m ? v : m), 0));
    // A sampled map: the density of every sample, shaded under the points.
    density = meta.density ? densityImage(meta.density, d.buf, d.base || 0) : null;
    if (density) maxVar = Math.max(maxVar, density.maxVariability);
    x = new Float32Array(n);
    y = new Float32Array(n);
    z = new Float32Array(n);
    buckets = meta.epochs + 1;
    for (let i = 0; i < n; i++) {
      x[i] = (cols.variability[i] / maxVar) * 2 - 1;
      y[i] = cols.confidence[i] * 2 - 1;
      z[i] = Math.min(buckets - 1, Math.round(cols.correctness[i] * meta.epochs));
    }
    $('xmax').textContent = maxVar.toFixed(3);
    $('legend').innerHTML = palette(buckets)
      .map((c, k) => `<span><i style="background:${c}"></i>correct in ${k}/${meta.epochs} epochs</span>`)
      .join('');
  };
  load(data);

  const canvas = $('plot');
  const rect = canvas.getBoundingClientRect();
  // The data's aspect ratio is the canvas's: the map fills the canvas.
  const aspect = rect.width / rect.height;
  const sp = createScatterplot({
    canvas,
    width: rect.width,
    height: rect.height,
    aspectRatio: aspect,
    pointSize: n > 200000 ? 2 : 4,
    opacity: n > 200000 ? 0.6 : 0.85,
    pointColor: palette(buckets),
    colorBy: 'valueA',
    lassoColor: [0.1, 0.1, 0.1, 1],
    lassoMinDelay: 10,
    // Transparent over a density layer.
    backgroundColor: density ? [1, 1, 1, 0] : [1, 1, 1, 1],
  });
  const densityCanvas = $('density');
  const drawDensity = () => {
    const r = canvas.getBoundingClientRect();
    const box = canvas.parentElement.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    Object.assign(densityCanvas.style, {
      left: r.left - box.left + 'px',
      top: r.top - box.top + 'px',
      width: r.width + 'px',
      height: r.height + 'px',
    });
    densityCanvas.width = Math.round(r.width * dpr);
    densityCanvas.height = Math.round(r.height * dpr);
    const ctx = densityCanvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, r.width, r.height);
    if (!density) return;
    // The grid's corners where the camera puts them: (0, 1) top left, (max, 0) bottom right.
    const view = sp.get('cameraView');
    const [x0, y0] = project(view, -1, 1, r, aspect);
    const [x1, y1] = project(view, (density.maxVariability / maxVar) * 2 - 1, -1, r, aspect);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(density.image, x0 - r.left, y0 - r.top, x1 - x0, y1 - y0);
  };
  sp.subscribe('view', drawDensity);
  const t0 = performance.now();
  await sp.draw({ x, y, valueA: z }, { zDataType: 'categorical' });
  drawDensity();
  window.cartoMap = {
    get n() {
      return n;
    },
    get epochs() {
      return meta.epochs;
    },
    drawMs: performance.now() - t0,
    // The density layer of a sampled map (tests read its total).
    get density() {
      return density && { bins: density.bins, total: density.total };
    },
    scatterplot: sp,
    selected: [],
    filtered: null,
    // Where sample i is drawn, in client coordinates (tests hover it).
    screenOf: (i) => {
      const r = canvas.getBoundingClientRect();
      const [sx, sy] = sp.getScreenPosition(i);
      return [r.left + sx, r.top + sy];
    },
    // Where (variability, confidence) is drawn, in client coordinates.
    screenOfData: (v, c) =>
      project(sp.get('cameraView'), (v / maxVar) * 2 - 1, c * 2 - 1, canvas.getBoundingClientRect(), aspect),
  };
  document.body.dataset.ready = 'true';

  // Hover: the sample behind the point.
  const tip = $('tooltip');
  let mouse = [0, 0];
  canvas.addEventListener('mousemove', (e) => {
    mouse = [e.clientX, e.clientY];
  });
  const describe = (i) => {
    const given = labelName(cols.label[i]);
    const predicted = predictedOf.has(i) ? labelName(predictedOf.get(i)) : '';
    return (
      `<b>${escapeHtml(textOf(i) || 'id ' + idOf(i))}</b>` +
      `<table><tr><td>sample_id</td><td>${sid(i)}</td></tr>` +
      `<tr><td>id</td><td>${escapeHtml(idOf(i))}</td></tr>` +
      `<tr><td>given label</td><td>${escapeHtml(given)}</td></tr>` +
      (predicted ? `<tr><td>most predicted</td><td>${escapeHtml(predicted)}</td></tr>` : '') +
      `<tr><td>confidence</td><td>${cols.confidence[i].toFixed(3)}</td></tr>` +
      `<tr><td>variability</td><td>${cols.variability[i].toFixed(3)}</td></tr>` +
      `<tr><td>correctness</td><td>${cols.correctness[i].toFixed(3)}</td></tr>` +
      `<tr><td>AUM</td><td>${cols.aum[i].toFixed(3)}</td></tr>` +
      `<tr><td>forgetting events</td><td>${cols.forgetting_events[i]}</td></tr>` +
      (cols.region[i] & 8 ? `<tr><td>is_suspect</td><td>yes: below the threshold samples' cut</td></tr>` : '') +
      `</table>`
    );
  };
  sp.subscribe('pointOver', (i) => {
    tip.innerHTML = describe(i);
    tip.hidden = false;
    // Beside the pointer, kept inside the window.
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    tip.style.left = Math.max(0, Math.min(mouse[0] + 14, window.innerWidth - w - 4)) + 'px';
    tip.style.top = (mouse[1] + 14 + h > window.innerHeight ? Math.max(0, mouse[1] - h - 14) : mouse[1] + 14) + 'px';
    window.cartoMap.hovered = i;
  });
  sp.subscribe('pointOut', () => {
    tip.hidden = true;
  });

  // Filters: labels, regions, text.
  const labelBox = $('labels');
  const labelBoxes = () => {
    labelBox.innerHTML = names
      .map((nm, k) => `<label><input type="checkbox" data-label="${k}" checked> ${escapeHtml(nm)}</label>`)
      .join('');
  };
  labelBoxes();
  const applyFilters = () => {
    const keepLabels = new Set(
      [...labelBox.querySelectorAll('input')].filter((b) => b.checked).map((b) => Number(b.dataset.label)),
    );
    const region = $('region').value;
    const bit = { all: 0, easy: 1, ambiguous: 2, hard: 4, suspect: 8 }[region];
    const q = $('search').value.trim().toLowerCase();
    const keep = [];
    for (let i = 0; i < n; i++) {
      if (!keepLabels.has(cols.label[i])) continue;
      if (bit && !(cols.region[i] & bit)) continue;
      if (q && !(textOf(i) || '').toLowerCase().includes(q) && !String(idOf(i)).toLowerCase().includes(q)) continue;
      keep.push(i);
    }
    const all = keep.length === n;
    window.cartoMap.filtered = all ? null : keep;
    if (all) sp.unfilter();
    else sp.filter(keep);
    $('shown').textContent = `${keep.length.toLocaleString()} of ${n.toLocaleString()} points shown`;
  };
  labelBox.addEventListener('change', applyFilters);
  $('region').addEventListener('change', applyFilters);
  $('search').addEventListener('input', applyFilters);
  $('shown').textContent = `${n.toLocaleString()} points shown`;

  // Selection (lasso: shift + drag; or a box: alt + drag) and its table.
  const showSelection = (points) => {
    window.cartoMap.selected = points;
    $('count').textContent = `${points.length.toLocaleString()} selected`;
    const rows = points.slice(0, 200).map(
      (i) =>
        `<tr><td>${sid(i)}</td><td>${escapeHtml(labelName(cols.label[i]))}</td>` +
        `<td>${cols.confidence[i].toFixed(3)}</td><td>${cols.variability[i].toFixed(3)}</td>` +
        `<td>${escapeHtml((textOf(i) || idOf(i)).slice(0, 120))}</td></tr>`,
    );
    $('rows').innerHTML = rows.join('');
  };
  sp.subscribe('select', ({ points }) => showSelection([...points]));
  sp.subscribe('deselect', () => showSelection([]));
  // Box selection: alt + drag draws a rectangle in data space.
  let box = null;
  // Capture phase: the camera must be fixed before it sees the drag, or it pans.
  const band = $('band');
  window.addEventListener(
    'mousedown',
    (e) => {
      if (!e.altKey || e.target !== canvas) return;
      box = { from: [e.clientX, e.clientY] };
      sp.set({ cameraIsFixed: true });
    },
    true,
  );
  window.addEventListener('mousemove', (e) => {
    if (!box) return;
    const [x0, x1] = [box.from[0], e.clientX].sort((a, b) => a - b);
    const [y0, y1] = [box.from[1], e.clientY].sort((a, b) => a - b);
    Object.assign(band.style, { left: x0 + 'px', top: y0 + 'px', width: x1 - x0 + 'px', height: y1 - y0 + 'px' });
    band.hidden = false;
  });
  window.addEventListener('mouseup', (e) => {
    if (!box) return;
    band.hidden = true;
    sp.set({ cameraIsFixed: false });
    const r = canvas.getBoundingClientRect();
    const [x0, x1] = [box.from[0], e.clientX].sort((a, b) => a - b);
    const [y0, y1] = [box.from[1], e.clientY].sort((a, b) => a - b);
    box = null;
    const view = sp.get('cameraView');
    const inBox = [];
    const allowed = window.cartoMap.filtered ? new Set(window.cartoMap.filtered) : null;
    for (let i = 0; i < n; i++) {
      if (allowed && !allowed.has(i)) continue;
      const [sx, sy] = project(view, x[i], y[i], r, aspect);
      if (sx >= x0 && sx <= x1 && sy >= y0 && sy <= y1) inBox.push(i);
    }
    sp.select(inBox);
  });

  $('export').addEventListener('click', () => {
    const header = ['sample_id', 'id', 'label', 'confidence', 'variability', 'correctness', 'aum', 'forgetting_events', 'text'];
    const rows = window.cartoMap.selected.map((i) => [
      sid(i),
      idOf(i),
      labelName(cols.label[i]),
      cols.confidence[i],
      cols.variability[i],
      cols.correctness[i],
      cols.aum[i],
      cols.forgetting_events[i],
      textOf(i) || '',
    ]);
    download('selection.csv', [header, ...rows]);
  });

  // The review reads the current map through these.
  const view = {
    get suspects() {
      return meta.suspects;
    },
    get names() {
      return names;
    },
    label: (i) => cols.label[i],
    point: (s) => point(s),
    sid: (i) => sid(i),
    idOf: (i) => idOf(i),
    labelName,
    describe,
    predictedOf: (i) => (predictedOf.has(i) ? predictedOf.get(i) : undefined),
  };
  const review = setupReview(view, sp);

  return {
    // Redraws with a newer map of the same job: filters, selection and
    // review decisions stay; with the same points the dots glide to their
    // new places.
    async update(d) {
      const before = n;
      const selected = window.cartoMap.selected.map(sid);
      const namesBefore = names.join('\n');
      load(d);
      const same = n === before;
      if (names.join('\n') !== namesBefore) labelBoxes();
      sp.set({ pointColor: palette(buckets), backgroundColor: density ? [1, 1, 1, 0] : [1, 1, 1, 1] });
      const again = selected.map(point).filter((i) => i !== undefined);
      await sp.draw(
        { x, y, valueA: z },
        { transition: same, transitionDuration: 600, preventFilterReset: false, zDataType: 'categorical' },
      );
      drawDensity();
      applyFilters();
      if (again.length) sp.select(again);
      else showSelection([]);
      review.refresh();
    },
  };
}

// The density grid (bins × bins counts, row-major from confidence 0 up) as
// an image: darker where more samples are, on a log scale.
function densityImage(d, buf, base) {
  const counts = new Uint32Array(buf, base + d.offset, d.bins * d.bins);
  let max = 0;
  let total = 0;
  for (const c of counts) {
    total += c;
    if (c > max) max = c;
  }
  const image = document.createElement('canvas');
  image.width = image.height = d.bins;
  const ctx = image.getContext('2d');
  const pixels = ctx.createImageData(d.bins, d.bins);
  const scale = Math.log1p(max) || 1;
  for (let row = 0; row < d.bins; row++) {
    for (let col = 0; col < d.bins; col++) {
      const c = counts[row * d.bins + col];
      // Image rows run from the top: confidence 1 first.
      const p = ((d.bins - 1 - row) * d.bins + col) * 4;
      pixels.data.set([60, 80, 130, c ? Math.round(40 + 180 * (Math.log1p(c) / scale)) : 0], p);
    }
  }
  ctx.putImageData(pixels, 0, 0);
  return { image, bins: d.bins, total, maxVariability: d.max_variability };
}

// The client position of data point (x, y): regl-scatterplot's model
// (x scaled by the data's aspect ratio), the camera's view, then its
// projection (x divided by the canvas's aspect ratio; here the two are equal).
function project(view, px, py, rect, aspect) {
  const cx = (view[0] * px * aspect + view[4] * py + view[12]) / aspect;
  const cy = view[1] * px * aspect + view[5] * py + view[13];
  return [rect.left + ((cx + 1) / 2) * rect.width, rect.top + (0.5 - cy / 2) * rect.height];
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

// Review mode: step through suspects.csv's order, decide, export relabels.csv.
// Decisions are kept by sample id, so they survive a redraw of the live map.
function setupReview(view, sp) {
  let order = [];
  const decisions = new Map();
  let at = 0;
  const panel = $('review');
  const choose = $('newlabel');
  const refresh = () => {
    order = view.suspects.map(view.point).filter((i) => i !== undefined);
    at = Math.min(at, Math.max(0, order.length - 1));
    choose.innerHTML = view.names.map((nm, k) => `<option value="${k}">${escapeHtml(nm)}</option>`).join('');
    if (!panel.hidden) show();
  };
  const show = () => {
    if (!order.length) {
      $('suspect').innerHTML = 'No suspects.';
      return;
    }
    const i = order[at];
    const d = decisions.get(view.sid(i));
    $('progress').textContent = `suspect ${at + 1} of ${order.length} · ${decisions.size} decided`;
    $('suspect').innerHTML =
      view.describe(i) +
      (d ? `<p class="decided">decided: ${d.action}${d.label !== undefined ? ' → ' + escapeHtml(view.labelName(d.label)) : ''}</p>` : '');
    // The suggestion: the other class the model preferred, when known.
    const p = view.predictedOf(i);
    if (p !== undefined && p !== view.label(i)) choose.value = String(p);
    sp.select([i]);
  };
  const decide = (action) => {
    const i = order[at];
    const s = view.sid(i);
    decisions.set(s, action === 'relabel' ? { action, label: Number(choose.value), id: view.idOf(i) } : { action, id: view.idOf(i) });
    if (at < order.length - 1) at++;
    show();
  };
  $('review-open').addEventListener('click', () => {
    panel.hidden = !panel.hidden;
    if (!panel.hidden) show();
  });
  $('keep').addEventListener('click', () => decide('keep'));
  $('relabel').addEventListener('click', () => decide('relabel'));
  $('drop').addEventListener('click', () => decide('drop'));
  $('prev').addEventListener('click', () => {
    at = Math.max(0, at - 1);
    show();
  });
  $('next').addEventListener('click', () => {
    at = Math.min(order.length - 1, at + 1);
    show();
  });
  $('export-relabels').addEventListener('click', () => {
    const rows = [['sample_id', 'id', 'action', 'new_label']];
    // In the suspects' order, then any decided sample no longer among them.
    const inOrder = order.map(view.sid);
    const rest = [...decisions.keys()].filter((s) => !inOrder.includes(s)).sort((a, b) => a - b);
    for (const s of [...inOrder, ...rest]) {
      const d = decisions.get(s);
      if (!d) continue;
      rows.push([s, d.id, d.action, d.action === 'relabel' ? view.labelName(d.label) : '']);
    }
    download('relabels.csv', rows);
  });
  refresh();
  window.cartoReview = { decide, show, get at() { return at; }, decisions };
  return { refresh };
}

export function showError(e) {
  document.body.dataset.error = String(e);
  const p = document.createElement('pre');
  p.textContent = 'carto data map: ' + e;
  document.body.prepend(p);
}
