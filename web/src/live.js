// The live page of `carto serve --http` / `carto run --ui`: the coordinator's
// jobs with their progress (what `carto watch` shows), and the chosen job's
// data map, fetched again and redrawn whenever the job commits an epoch.
//
// The token: from the address's fragment (#token=…, which browsers never
// send to a server; it is moved into this tab's sessionStorage and removed
// from the address bar) or from the login form. It travels only as
// `Authorization: Bearer …`.
import { mountMap, showError } from './map.js';

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const TOKEN_KEY = 'carto.token';

class NeedsToken extends Error {}

function takeToken() {
  const m = location.hash.match(/(?:^#|&)token=([^&]*)/);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

let token = takeToken();

async function api(path) {
  const r = await fetch(path, { headers: token ? { Authorization: 'Bearer ' + token } : {}, cache: 'no-store' });
  if (r.ok) return r;
  let message = r.statusText;
  try {
    message = (await r.json()).error || message;
  } catch {
    // Not JSON: keep the status text.
  }
  if (r.status === 401) throw new NeedsToken(message);
  throw new Error(`${path}: ${r.status} ${message}`);
}

// A map response: "CMAP", u32 metadata length, metadata JSON, padding to 4, columns.
async function fetchMap(id, texts) {
  const buf = await (await api(`/api/jobs/${encodeURIComponent(id)}/map${texts ? '?texts=1' : ''}`)).arrayBuffer();
  const head = new DataView(buf);
  const magic = String.fromCharCode(...new Uint8Array(buf, 0, 4));
  if (magic !== 'CMAP') throw new Error('not a data map response');
  const len = head.getUint32(4, true);
  const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, len)));
  return { meta, buf, base: Math.ceil((8 + len) / 4) * 4, texts: meta.texts, ids: meta.ids };
}

function escapeHtml(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

const fixed = (v, d) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '');

// One row per job: the last committed epoch's figures, or the running epoch's.
function jobRow(j, current) {
  const running = j.state === 'running';
  const last = j.epochs[j.epochs.length - 1];
  const p = j.progress || {};
  const shown = running && p.samples_done > 0 ? p : last || {};
  const epoch = running ? `${Math.min(p.epoch + 1, j.epochs_total)}/${j.epochs_total}` : `${j.epochs.length}/${j.epochs_total}`;
  const pct = running && p.samples_total ? Math.round((100 * p.samples_done) / p.samples_total) : null;
  const bar = pct === null ? '' : `<progress max="100" value="${pct}"></progress> ${pct}%`;
  return (
    `<tr data-job="${escapeHtml(j.id)}"${current ? ' class="current"' : ''}>` +
    `<td>${escapeHtml(j.id)}</td><td>${escapeHtml(j.name || (j.spec?.data || '').split('/').pop())}</td>` +
    `<td>${escapeHtml(j.state)}${j.error ? ': ' + escapeHtml(j.error) : ''}</td><td>${epoch}</td>` +
    `<td>${fixed(shown.loss, 4)}</td><td>${fixed(shown.accuracy, 4)}</td><td>${fixed(shown.samples_per_sec, 0)}</td>` +
    `<td>${bar}</td></tr>`
  );
}

const state = {
  jobs: [],
  // The job whose map is shown: ?job=ID, else the first running job, else the latest.
  chosen: new URLSearchParams(location.search).get('job'),
  // What the drawn map is: job id, epochs, final.
  drawnKey: null,
  handle: null,
  loading: false,
  maps: 0,
};
window.cartoLive = state;

function chosenJob() {
  const byId = state.jobs.find((j) => j.id === state.chosen);
  if (byId) return byId;
  return state.jobs.find((j) => j.state === 'running') || state.jobs[state.jobs.length - 1];
}

async function refreshMap(job) {
  const key = `${job.id}:${job.epochs.length}:${job.state === 'succeeded'}`;
  if (key === state.drawnKey || state.loading) return;
  state.loading = true;
  try {
    const data = await fetchMap(job.id, true);
    if (data.meta.n === 0 && !state.handle) {
      $('title').textContent = data.meta.title;
      $('note').textContent = data.meta.note || '';
    } else if (!state.handle) {
      state.handle = await mountMap(data);
    } else {
      await state.handle.update(data);
    }
    state.drawnKey = key;
    state.maps += 1;
    // Tests wait on these.
    document.body.dataset.mapJob = job.id;
    document.body.dataset.mapEpochs = String(data.meta.n ? data.meta.epochs : 0);
  } finally {
    state.loading = false;
  }
}

async function poll() {
  try {
    const { jobs } = await (await api('/api/jobs')).json();
    $('login').hidden = true;
    state.jobs = jobs;
    const job = chosenJob();
    $('job-rows').innerHTML = jobs.map((j) => jobRow(j, job && j.id === job.id)).join('') || '<tr><td colspan="8">no jobs yet</td></tr>';
    $('live-status').textContent = `${jobs.length} job${jobs.length === 1 ? '' : 's'} · updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.live = 'true';
    if (job) await refreshMap(job);
  } catch (e) {
    if (e instanceof NeedsToken) {
      $('login').hidden = false;
      $('login-error').textContent = token ? e.message : '';
      return; // Polling resumes when a token is entered.
    }
    $('live-status').textContent = `coordinator not reachable (${e.message}); the page keeps the last map and tries again`;
  }
  setTimeout(poll, POLL_MS);
}

$('job-rows').addEventListener('click', (e) => {
  const row = e.target.closest('tr[data-job]');
  if (!row) return;
  state.chosen = row.dataset.job;
  const url = new URL(location.href);
  url.searchParams.set('job', state.chosen);
  history.replaceState(null, '', url.pathname + url.search);
});

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token').value = '';
  poll();
});

poll().catch(showError);
