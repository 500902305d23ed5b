//! `datamap.html`: the interactive data map, one self-contained file that
//! opens from disk with no network. The page's code is web/src/datamap.js
//! (regl-scatterplot, bundled by esbuild at build time and embedded in the
//! binary); the data rides along as binary columns (little-endian float32 /
//! int32 / u8, base64 in one script element), the texts and ids as JSON.
//!
//! Columns (point i is sample_id i, or `sample_id[i]` when sampled): label, confidence, variability,
//! correctness, aum (int32 / float32), forgetting_events (u8, capped at 255),
//! region (u8: bit 1 easy-to-learn, 2 ambiguous, 4 hard-to-learn — the 33%
//! most confident, most variable, least confident, as in the PNG map; 8
//! is_suspect, with threshold samples). The
//! suspects' most predicted class rides in the metadata.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use base64::Engine;
use carto_common::proto::v1 as pb;
use carto_common::{CartoError, Result};

use crate::suspects::Suspect;

/// The bundled page code (web/, built by build.rs).
const SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/datamap.js"));

/// Texts longer than this are cut in the page (the file stays small).
const TEXT_CHARS: usize = 500;
/// Up to this many samples the page draws every one (1M: 28 MiB, drawn in
/// under 3 s); beyond it (`max_points`), every suspect and a uniform sample of
/// half as many, over a density layer of all samples, said on the page.
pub const MAX_POINTS: usize = 2_000_000;
/// Cells per axis of the density layer.
pub const DENSITY_BINS: usize = 256;

/// The rows a page of `n` samples draws: all of them, or (past `max`) every
/// suspect and every ⌈n / `sample`⌉-th row, in row order.
pub fn drawn_rows(n: usize, suspects: &[usize], max: usize, sample: usize) -> Option<Vec<usize>> {
    if n <= max {
        return None;
    }
    let stride = n.div_ceil(sample.max(1));
    let mut rows: Vec<usize> = (0..n).step_by(stride).chain(suspects.iter().copied().filter(|&s| s < n)).collect();
    rows.sort_unstable();
    rows.dedup();
    Some(rows)
}

/// What goes into one page.
pub struct Page<'a> {
    pub title: &'a str,
    pub metrics: &'a RecordBatch,
    pub label_names: Option<&'a [String]>,
    pub ids: Option<&'a [String]>,
    pub texts: Option<&'a [String]>,
    /// suspects.csv's rows, in order.
    pub suspects: &'a [Suspect],
    /// Past this many samples the page is sampled ([`MAX_POINTS`] by default).
    pub max_points: usize,
}

/// Every sample counted in a `bins` × `bins` grid over variability
/// [0, its maximum] × confidence [0, 1], row-major from confidence 0 up.
pub fn density(variability: &[f64], confidence: &[f64], bins: usize) -> (Vec<u32>, f64) {
    let max_var = variability.iter().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-9);
    let mut grid = vec![0u32; bins * bins];
    let cell = |x: f64| ((x * bins as f64) as usize).min(bins - 1);
    for (v, c) in variability.iter().zip(confidence) {
        grid[cell(c.clamp(0.0, 1.0)) * bins + cell((v / max_var).clamp(0.0, 1.0))] += 1;
    }
    (grid, max_var)
}

fn f64s(b: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let c = b.column_by_name(name).ok_or_else(|| CartoError::invalid(format!("metrics: no column '{name}'")))?;
    Ok(c.as_primitive_opt::<Float64Type>()
        .ok_or_else(|| CartoError::invalid(format!("metrics: column '{name}' is not float64")))?
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

fn i64s(b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let c = b.column_by_name(name).ok_or_else(|| CartoError::invalid(format!("metrics: no column '{name}'")))?;
    if let Some(a) = c.as_primitive_opt::<Int64Type>() {
        return Ok(a.iter().map(|v| v.unwrap_or(-1)).collect());
    }
    if let Some(a) = c.as_primitive_opt::<Int32Type>() {
        return Ok(a.iter().map(|v| v.unwrap_or(-1) as i64).collect());
    }
    Err(CartoError::invalid(format!("metrics: column '{name}' is not an integer column")))
}

/// Marks the `k` samples with the largest `key` with `bit`.
fn mark_top(region: &mut [u8], key: &[f64], k: usize, bit: u8) {
    let mut order: Vec<usize> = (0..key.len()).collect();
    order.sort_by(|&a, &b| key[b].total_cmp(&key[a]).then(a.cmp(&b)));
    for &i in order.iter().take(k) {
        region[i] |= bit;
    }
}

/// `</` cannot close a script element inside JSON: escape it.
fn json_in_script(v: &serde_json::Value) -> String {
    v.to_string().replace("</", "<\\/")
}

/// The map a page draws: the drawn points' columns (see [`pb::DataMap`]),
/// what `datamap.html` embeds and what GetDataMap returns.
pub fn data_map(page: &Page) -> Result<pb::DataMap> {
    let m = page.metrics;
    let n = m.num_rows();
    let sample_id = i64s(m, "sample_id")?;
    let label = i64s(m, "label")?;
    // Samples not observed yet (an external job's first epochs) have null
    // metrics: drawn at the origin and counted in the note.
    let confidence = f64s(m, "confidence")?;
    let unobserved = confidence.iter().filter(|c| c.is_nan()).count();
    let zero_nan = |v: Vec<f64>| -> Vec<f64> { v.into_iter().map(|x| if x.is_nan() { 0.0 } else { x }).collect() };
    let confidence = zero_nan(confidence);
    let variability = zero_nan(f64s(m, "variability")?);
    let correctness = zero_nan(f64s(m, "correctness")?);
    let aum = zero_nan(f64s(m, "aum")?);
    let forgetting = i64s(m, "forgetting_events")?;
    let epochs = i64s(m, "epochs")?.into_iter().max().unwrap_or(0).max(0);
    let third = (n as f64 / 3.0).round() as usize;
    let mut region = vec![0u8; n];
    mark_top(&mut region, &confidence, third, 1);
    mark_top(&mut region, &variability, third, 2);
    let negated: Vec<f64> = confidence.iter().map(|c| -c).collect();
    mark_top(&mut region, &negated, third, 4);
    // With threshold samples: the calibrated cut's suspects.
    if let Some(flags) = m.column_by_name("is_suspect").and_then(|c| c.as_boolean_opt().cloned()) {
        for (i, r) in region.iter_mut().enumerate() {
            if flags.is_valid(i) && flags.value(i) {
                *r |= 8;
            }
        }
    }
    if sample_id.iter().enumerate().any(|(i, &s)| s != i as i64) {
        return Err(CartoError::invalid("metrics: sample_id must be the row index 0..n, in order"));
    }
    let suspect_ids: Vec<usize> = page.suspects.iter().map(|s| s.sample_id).collect();
    let sample = (page.max_points / 2).max(1);
    let drawn = drawn_rows(n, &suspect_ids, page.max_points, sample);
    let (density, density_max_variability) = match &drawn {
        Some(_) => density(&variability, &confidence, DENSITY_BINS),
        None => (Vec::new(), 0.0),
    };
    // The drawn rows of a column (all of them when nothing is sampled).
    fn pick<T: Clone>(v: &[T], rows: &Option<Vec<usize>>) -> Vec<T> {
        match rows {
            Some(r) => r.iter().map(|&i| v[i].clone()).collect(),
            None => v.to_vec(),
        }
    }
    let mut notes = Vec::new();
    if let Some(r) = &drawn {
        notes.push(format!(
            "{n} samples: the page draws {} of them — every one of the {} suspects and a uniform sample (every {}th) — over the density of all {n} (shaded)",
            r.len(),
            suspect_ids.len(),
            n.div_ceil(sample)
        ));
    }
    if unobserved > 0 {
        notes.push(format!("{unobserved} samples not observed yet are drawn at (0, 0)"));
    }
    let f32s = |v: &[f64]| -> Vec<f32> { pick(v, &drawn).into_iter().map(|x| x as f32).collect() };
    let i32s = |v: &[i64]| -> Vec<i32> { pick(v, &drawn).into_iter().map(|x| x as i32).collect() };
    let label = i32s(&label);
    let classes = label.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
    let label_names: Vec<String> = match page.label_names {
        Some(names) => names.to_vec(),
        None => (0..classes).map(|k| k.to_string()).collect(),
    };
    Ok(pb::DataMap {
        job_id: String::new(),
        title: page.title.to_string(),
        epochs: epochs as u32,
        samples: n as u64,
        r#final: true,
        label_names,
        note: notes.join("; "),
        sample_id: drawn.as_ref().map(|r| r.iter().map(|&i| i as u32).collect()).unwrap_or_default(),
        label,
        confidence: f32s(&confidence),
        variability: f32s(&variability),
        correctness: f32s(&correctness),
        aum: f32s(&aum),
        // Forgetting events above 255 are shown as 255.
        forgetting_events: pick(&forgetting, &drawn).into_iter().map(|f| f.clamp(0, 255) as u8).collect(),
        region: pick(&region, &drawn),
        suspects: suspect_ids.iter().map(|&s| s as u32).collect(),
        most_predicted: page.suspects.iter().map(|s| s.most_predicted.map(|p| p as i32).unwrap_or(-1)).collect(),
        ids: page.ids.map(|ids| pick(ids, &drawn)).unwrap_or_default(),
        // Without texts the page shows ids or sample ids.
        texts: page.texts.map(|t| pick(t, &drawn).iter().map(|s| cut_text(s)).collect()).unwrap_or_default(),
        density_bins: if density.is_empty() { 0 } else { DENSITY_BINS as u32 },
        density,
        density_max_variability: density_max_variability as f32,
    })
}

/// A text as the page shows it: at most [`TEXT_CHARS`] characters.
pub fn cut_text(s: &str) -> String {
    s.chars().take(TEXT_CHARS).collect()
}

/// The page's form of a map: its metadata (JSON) and one little-endian buffer
/// of its columns, each 4-byte aligned, at the offsets the metadata names.
/// Texts and ids are not included (they travel as JSON arrays).
pub fn encode(map: &pb::DataMap) -> (serde_json::Value, Vec<u8>) {
    let points = map.label.len();
    let mut buf: Vec<u8> = Vec::with_capacity(points * 26);
    let mut columns = serde_json::Map::new();
    let mut put = |name: &str, ty: &str, bytes: &[u8], buf: &mut Vec<u8>| {
        while buf.len() % 4 != 0 {
            buf.push(0);
        }
        columns.insert(name.into(), serde_json::json!([buf.len(), ty]));
        buf.extend_from_slice(bytes);
    };
    let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let i32s = |v: &[i32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    if !map.sample_id.is_empty() {
        // Sampled: point k is sample sample_id[k].
        put("sample_id", "i32", &map.sample_id.iter().flat_map(|&r| (r as i32).to_le_bytes()).collect::<Vec<u8>>(), &mut buf);
    }
    put("label", "i32", &i32s(&map.label), &mut buf);
    put("confidence", "f32", &f32s(&map.confidence), &mut buf);
    put("variability", "f32", &f32s(&map.variability), &mut buf);
    put("correctness", "f32", &f32s(&map.correctness), &mut buf);
    put("aum", "f32", &f32s(&map.aum), &mut buf);
    put("forgetting_events", "u8", &map.forgetting_events, &mut buf);
    put("region", "u8", &map.region, &mut buf);
    // Not a per-point column: its own entry in the metadata.
    let density = if map.density.is_empty() {
        serde_json::Value::Null
    } else {
        while buf.len() % 4 != 0 {
            buf.push(0);
        }
        let offset = buf.len();
        buf.extend(map.density.iter().flat_map(|c| c.to_le_bytes()));
        serde_json::json!({ "offset": offset, "bins": map.density_bins, "max_variability": map.density_max_variability })
    };
    let most_predicted: Vec<(u32, i32)> =
        map.suspects.iter().zip(&map.most_predicted).filter(|(_, &p)| p >= 0).map(|(&s, &p)| (s, p)).collect();
    let meta = serde_json::json!({
        "job_id": map.job_id,
        "title": map.title,
        "n": points,
        "samples": map.samples,
        "note": if map.note.is_empty() { None } else { Some(&map.note) },
        "epochs": map.epochs.max(1),
        "final": map.r#final,
        "label_names": map.label_names,
        "columns": columns,
        "suspects": map.suspects,
        "most_predicted": most_predicted,
        "density": density,
    });
    (meta, buf)
}

/// The page's HTML.
pub fn render(page: &Page) -> Result<String> {
    Ok(render_map(&data_map(page)?))
}

/// The HTML of a map: one self-contained file.
pub fn render_map(map: &pb::DataMap) -> String {
    let (meta, buf) = encode(map);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&buf);
    let title = html_escape(&map.title);
    format!(
        "{head}<title>{title}</title>{STYLE}</head><body>{BODY}\
<script id=\"carto-meta\" type=\"application/json\">{meta}</script>\
<script id=\"carto-data\" type=\"application/octet-stream\">{b64}</script>\
<script id=\"carto-text\" type=\"application/json\">{texts}</script>\
<script id=\"carto-ids\" type=\"application/json\">{ids}</script>\
<script>{SCRIPT}</script></body></html>\n",
        head = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        meta = json_in_script(&meta),
        texts = json_in_script(&serde_json::json!(map.texts)),
        ids = json_in_script(&serde_json::json!(map.ids)),
        SCRIPT = SCRIPT.replace("</script", "<\\/script"),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes the page atomically.
pub fn write(page: &Page, path: &Path) -> Result<()> {
    let html = render(page)?;
    crate::outputs::write_text_atomic(path, &html)
}

pub const STYLE: &str = r#"<style>
body{font:14px system-ui,sans-serif;margin:0;display:grid;grid-template-columns:minmax(480px,1fr) 420px;grid-template-rows:auto minmax(0,1fr);height:100vh;overflow:hidden;color:#222}
header{grid-column:1/3;padding:8px 14px;border-bottom:1px solid #ddd}
header h1{font-size:17px;margin:0}
#note{color:#666;font-size:12px}
#plotbox{position:relative;padding:8px 8px 28px 40px;min-height:0;box-sizing:border-box}
#plot{width:100%;height:100%;display:block;border:1px solid #ddd;position:relative;z-index:1}
#density{position:absolute;pointer-events:none;z-index:0}
#ylab{position:absolute;left:4px;top:45%;transform:rotate(-90deg);font-size:12px;color:#555}
#xlab{position:absolute;bottom:6px;left:45%;font-size:12px;color:#555}
aside{overflow:auto;padding:8px 12px;border-left:1px solid #ddd}
#legend span{display:inline-block;margin-right:10px;font-size:12px}#legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
#tooltip{position:fixed;max-width:380px;background:#fff;border:1px solid #999;padding:6px 8px;font-size:12px;pointer-events:none;box-shadow:0 2px 6px #0003;z-index:9}
#tooltip table td:first-child{color:#666;padding-right:8px}
table.rows{border-collapse:collapse;font-size:12px;width:100%}table.rows td,table.rows th{border-bottom:1px solid #eee;padding:2px 4px;text-align:left}
#review{border:1px solid #bbb;padding:8px;margin:8px 0;background:#fafafa}.decided{color:#2a7}
button{margin:2px}
#band{position:fixed;border:1px dashed #333;background:#3331;pointer-events:none}
body.live{grid-template-rows:auto auto minmax(0,1fr)}
#jobs{grid-column:1/3;max-height:28vh;overflow:auto;padding:4px 14px;border-bottom:1px solid #ddd}
#jobs tbody tr{cursor:pointer}#jobs tr.current{background:#e8eefc}#live-status{color:#666;font-size:12px}
#login{position:fixed;inset:0;background:#fffe;z-index:10;display:flex;align-items:center;justify-content:center}#login[hidden]{display:none}
</style>"#;

pub const BODY: &str = r#"<header><h1 id="title"></h1><div id="note"></div><div id="legend"></div></header>
<div id="plotbox"><canvas id="density"></canvas><canvas id="plot"></canvas><span id="ylab">confidence (0 … 1)</span><span id="xlab">variability (0 … <span id="xmax"></span>)</span></div>
<aside>
<p><b>Filter</b> <span id="shown"></span></p>
<div id="labels"></div>
<p><select id="region"><option value="all">all regions</option><option value="easy">easy-to-learn</option><option value="ambiguous">ambiguous</option><option value="hard">hard-to-learn</option><option value="suspect">is_suspect</option></select>
<input id="search" type="search" placeholder="search text or id"></p>
<p><b>Selection</b> (lasso: shift + drag; box: alt + drag) <span id="count">0 selected</span> <button id="export">export CSV</button></p>
<p><button id="review-open">review suspects</button></p>
<div id="review" hidden><div id="progress"></div><div id="suspect"></div>
<button id="keep">label is right</button> <button id="relabel">relabel as</button> <select id="newlabel"></select> <button id="drop">drop</button><br>
<button id="prev">previous</button> <button id="next">next</button> <button id="export-relabels">export relabels.csv</button></div>
<table class="rows"><thead><tr><th>sample</th><th>label</th><th>conf.</th><th>var.</th><th>text</th></tr></thead><tbody id="rows"></tbody></table>
</aside><div id="tooltip" hidden></div><div id="band" hidden></div>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_density_layer_counts_every_sample_in_its_cell() {
        let var = [0.0, 0.5, 1.0, 0.25, f64::NAN];
        let conf = [0.0, 0.5, 1.0, 0.99, 0.1];
        let (grid, max) = density(&var, &conf, 4);
        assert_eq!(max, 1.0);
        assert_eq!(grid.iter().sum::<u32>(), 5, "every sample, NaN ones in the first column");
        assert_eq!(grid[0], 2, "(0, 0) and the NaN variability at confidence 0.1");
        assert_eq!(grid[2 * 4 + 2], 1, "(0.5, 0.5)");
        assert_eq!(grid[3 * 4 + 3], 1, "the maxima fall in the last cell");
        assert_eq!(grid[3 * 4 + 1], 1, "(0.25, 0.99)");
    }

    #[test]
    fn past_the_cap_the_page_draws_every_suspect_and_a_uniform_sample() {
        assert_eq!(drawn_rows(10, &[3], 10, 5), None, "at the cap: every row");
        let rows = drawn_rows(11, &[3, 9], 10, 5).unwrap();
        // Every 3rd row (⌈11/5⌉) plus the suspects, once each, in order.
        assert_eq!(rows, vec![0, 3, 6, 9]);
        let rows = drawn_rows(1_000, &[1, 998, 5_000], 100, 100).unwrap();
        assert_eq!(rows.len(), 102, "100 sampled + 2 suspects (one out of range is ignored)");
        assert!(rows.contains(&1) && rows.contains(&998) && rows.windows(2).all(|w| w[0] < w[1]));
    }
}
