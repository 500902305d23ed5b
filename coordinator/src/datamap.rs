//! The data map: the figure of Dataset Cartography (Swayamdipta et al. 2020,
//! Figure 1). x = variability, y = confidence, colour = correctness.
//!
//! # Layout
//! All sizes scale with `MapStyle::width` (`W`, default 1600 px, at least
//! [`MIN_WIDTH`] = 1200 so that the smallest text stays readable); `s = W/1600`
//! and every length below is given at `s = 1`, rounded to whole pixels:
//! - a title band (130 px): "Data map: TITLE", then the number of samples,
//!   epochs and labels with what the axes and colours mean, how the regions are
//!   found, and (only when it happens) which panels are 2-D histograms;
//! - the main row (860 px): the big **all labels** panel on the left (1000 px
//!   wide) and, on the right, the colour legend (one entry "correct in k/E
//!   epochs" per k = 0..=E in two columns, or a stepped colour bar with one
//!   cell per k when E > 11) above the three marginal histograms of
//!   confidence, variability and correctness (the correctness bars in the
//!   legend's colours);
//! - a header line (50 px) for the per-label grid. It reads "Per label: 24 of
//!   N labels shown (the 24 largest classes; …)" when there are more than
//!   [`MAX_LABEL_PANELS`] labels: nothing is dropped silently, and the
//!   all-labels panel always holds every sample;
//! - one panel per label (at most 24, in label order), titled with the label
//!   name (or "label k") and its number of samples, in a grid of 2 columns for
//!   1–2 labels, 3 for 3 and 4 otherwise, with `gap` = 16 px between panels
//!   and 24 px page margins: `panel_w = (W − 48 − (cols − 1)·16) / cols`,
//!   `panel_h = round(0.82 · panel_w)`.
//!
//! So the image is `W × (1040 + rows · (panel_h + 16) + 16)` pixels, a
//! function of `W` and the number of label panels only ([`image_size`]). At
//! the default width: 1600 × 1702 for 1–2 labels, 1600 × 1487 for 3 (one row
//! of 3), 1600 × 3000 for 21–24 labels (6 rows of 4).
//!
//! # Axes and colours
//! Confidence runs over 0..1. Variability (a population standard deviation of
//! a probability, so ≤ 0.5) runs over 0..`x_max`, with `x_max` = the largest
//! variability rounded up to a multiple of 0.05, at least 0.3 and at most 0.5,
//! the same in every panel. Colours are discrete: a sample correct in k of E
//! epochs (E = the largest `epochs`; a sample with fewer epochs gets
//! k = round(E · correct_count / epochs)) gets viridis sampled at 0.9·k/E (the
//! pale yellow end of viridis is left out so that every colour shows on white).
//!
//! # Regions
//! The three regions of the paper are annotated where they are in *this* data,
//! on the all-labels panel and on each label panel (computed per panel):
//! easy-to-learn = the 33 % of samples with the highest confidence,
//! hard-to-learn = the 33 % with the lowest confidence, ambiguous = the 33 %
//! with the highest variability (ties broken by row order, so the choice is
//! deterministic); `ceil(0.33·n)` samples each. Each name is written on a light
//! box centred on the median variability and median confidence of its
//! region's core — the most extreme 10 % ([`REGION_CORE_FRACTION`]) in the
//! region's own order — so the names point at the corners the regions grow
//! from even when the 33 % regions overlap in the middle of an unconverged map
//! (nudged vertically only when two boxes would overlap, kept inside the plot).
//!
//! # Large data
//! Points are never dropped or sampled. A panel with fewer than
//! `density_threshold` points (default 100,000) draws every point, as a small
//! filled circle (radius 2 px at the default width, opacity 0.75) in row order.
//! A panel with at least that many points is drawn as a deterministic 2-D
//! histogram of [`DENSITY_BINS`]² bins over the axis ranges: each non-empty bin
//! is filled with the palette colour of the mean correctness of its points, and
//! its opacity grows with log(count): `0.25 + 0.75·ln(1+c)/ln(1+c_max)` (c_max
//! of that panel). The SVG uses a lower threshold, [`SVG_DENSITY_THRESHOLD`]
//! (20,000 points, or `density_threshold` if lower), so the file stays small.
//!
//! Rendering is deterministic: the same input gives a byte-identical PNG.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Once;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use carto_common::{CartoError, Result};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// More labels than this: the largest classes are shown, and the figure says so.
pub const MAX_LABEL_PANELS: usize = 24;
/// Bins per axis of a panel drawn as a 2-D histogram.
pub const DENSITY_BINS: usize = 160;
/// The SVG switches to 2-D histograms from this many points in a panel.
pub const SVG_DENSITY_THRESHOLD: usize = 20_000;
/// Narrower `MapStyle::width`s are raised to this.
pub const MIN_WIDTH: u32 = 1200;
/// Fraction of samples in each annotated region.
pub const REGION_FRACTION: f64 = 0.33;
/// The most extreme share of samples whose median places a region's name.
pub const REGION_CORE_FRACTION: f64 = 0.10;

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bundled font is valid; a failure here would show as missing text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/DejaVuSans.ttf"));
    });
}

/// What the data map shows: one entry per sample.
#[derive(Debug, Clone)]
pub struct MapData {
    pub confidence: Vec<f64>,
    pub variability: Vec<f64>,
    pub correct_count: Vec<i32>,
    pub epochs: Vec<i32>,
    pub labels: Vec<i64>,
    /// Class names indexed by label.
    pub label_names: Option<Vec<String>>,
    pub title: String,
}

impl MapData {
    /// Reads `metrics.parquet`: columns `confidence`, `variability`,
    /// `correct_count`, `epochs`, `label` and, if present, `label_name` (or the
    /// `carto.label_names` key-value metadata). The title is the job's name or
    /// data set from a `job.json` beside the file, else the file's path.
    pub fn from_metrics_file(path: &Path) -> Result<MapData> {
        let what = path.display().to_string();
        let f = File::open(path).map_err(|e| CartoError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| CartoError::invalid(format!("{what}: not a Parquet file: {e}")))?;
        let meta_names: Option<Vec<String>> = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == crate::outputs::LABEL_NAMES_KEY))
            .and_then(|k| k.value.as_deref())
            .and_then(|v| serde_json::from_str(v).ok());
        let schema = builder.schema().clone();
        let required: [(&str, bool); 5] = [
            ("confidence", false),
            ("variability", false),
            ("correct_count", true),
            ("epochs", true),
            ("label", true),
        ];
        let mut roots = Vec::new();
        for (name, integer) in required {
            let field = schema
                .field_with_name(name)
                .map_err(|_| CartoError::invalid(format!("{what}: column '{name}' is missing")))?;
            let dt = field.data_type();
            let ok = if integer { dt.is_integer() } else { dt.is_numeric() };
            if !ok {
                let want = if integer { "integers" } else { "numbers" };
                return Err(CartoError::invalid(format!(
                    "{what}: column '{name}' must hold {want}, not {dt}"
                )));
            }
            roots.push(schema.index_of(name).expect("found above"));
        }
        let has_names = match schema.field_with_name("label_name") {
            Ok(f) if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                roots.push(schema.index_of("label_name").expect("found above"));
                true
            }
            _ => false,
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;

        let mut d = MapData {
            confidence: Vec::new(),
            variability: Vec::new(),
            correct_count: Vec::new(),
            epochs: Vec::new(),
            labels: Vec::new(),
            label_names: None,
            title: String::new(),
        };
        let mut names_by_label: BTreeMap<i64, String> = BTreeMap::new();
        let mut row0 = 0usize;
        for batch in reader {
            let batch = batch.map_err(|e| CartoError::invalid(format!("{what}: {e}")))?;
            let col = |name: &str, to: &DataType| -> Result<ArrayRef> {
                let c = batch.column_by_name(name).expect("projected");
                if c.null_count() > 0 {
                    let r = (0..c.len()).find(|&i| c.is_null(i)).unwrap_or(0);
                    return Err(CartoError::invalid(format!(
                        "{what}: column '{name}': null at row {}",
                        row0 + r
                    )));
                }
                arrow::compute::cast(c, to).map_err(|e| CartoError::invalid(format!("{what}: column '{name}': {e}")))
            };
            for (name, out) in [("confidence", &mut d.confidence), ("variability", &mut d.variability)] {
                let a = col(name, &DataType::Float64)?;
                let v = a.as_primitive::<Float64Type>().values();
                if let Some(r) = v.iter().position(|x| !x.is_finite()) {
                    return Err(CartoError::invalid(format!(
                        "{what}: column '{name}': row {} is not a finite number ({})",
                        row0 + r,
                        v[r]
                    )));
                }
                out.extend_from_slice(v);
            }
            for (name, out) in [("correct_count", &mut d.correct_count), ("epochs", &mut d.epochs)] {
                let a = col(name, &DataType::Int32)?;
                out.extend_from_slice(a.as_primitive::<Int32Type>().values());
            }
            let a = col("label", &DataType::Int64)?;
            let labels = a.as_primitive::<Int64Type>().values();
            if has_names && meta_names.is_none() {
                let n = col("label_name", &DataType::Utf8)?;
                let n = n.as_string::<i32>();
                for (i, &l) in labels.iter().enumerate() {
                    names_by_label.entry(l).or_insert_with(|| n.value(i).to_string());
                }
            }
            d.labels.extend_from_slice(labels);
            row0 += batch.num_rows();
        }
        if d.labels.is_empty() {
            return Err(CartoError::invalid(format!("{what}: no rows")));
        }
        d.label_names = meta_names.or_else(|| {
            let max = *names_by_label.keys().next_back()?;
            if !(0..=1_000_000).contains(&max) {
                return None;
            }
            Some(
                (0..=max)
                    .map(|l| names_by_label.get(&l).cloned().unwrap_or_else(|| format!("label {l}")))
                    .collect(),
            )
        });
        d.title = title_from_job_json(path).unwrap_or(what);
        Ok(d)
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn validate(&self) -> Result<()> {
        let n = self.len();
        if n == 0 {
            return Err(CartoError::invalid("data map: no samples"));
        }
        let lens = [
            ("confidence", self.confidence.len()),
            ("variability", self.variability.len()),
            ("correct_count", self.correct_count.len()),
            ("epochs", self.epochs.len()),
        ];
        for (name, len) in lens {
            if len != n {
                return Err(CartoError::invalid(format!(
                    "data map: {len} values of '{name}' for {n} labels"
                )));
            }
        }
        for (name, v) in [("confidence", &self.confidence), ("variability", &self.variability)] {
            if let Some(r) = v.iter().position(|x| !x.is_finite()) {
                return Err(CartoError::invalid(format!(
                    "data map: '{name}' of sample {r} is not a finite number"
                )));
            }
        }
        Ok(())
    }

    fn label_name(&self, label: i64) -> String {
        self.label_names
            .as_ref()
            .and_then(|n| usize::try_from(label).ok().and_then(|l| n.get(l)))
            .cloned()
            .unwrap_or_else(|| format!("label {label}"))
    }
}

/// `job.json` beside a metrics file: its name, else its data set's file name.
fn title_from_job_json(metrics: &Path) -> Option<String> {
    let rec = crate::record::JobRecord::beside(metrics)?;
    rec.name.clone().or_else(|| Some(rec.dataset.path.clone()).filter(|p| !p.is_empty())).or(rec.spec.data)
}

/// How the map is drawn.
#[derive(Debug, Clone)]
pub struct MapStyle {
    /// Image width in pixels (at least [`MIN_WIDTH`]); the height follows (see [`image_size`]).
    pub width: u32,
    /// From this many points a panel is drawn as a 2-D histogram instead of points.
    pub density_threshold: usize,
}

impl Default for MapStyle {
    fn default() -> Self {
        MapStyle {
            width: 1600,
            density_threshold: 100_000,
        }
    }
}

// ---------------------------------------------------------------------------
// Geometry

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
}

struct Layout {
    w: u32,
    h: u32,
    s: f64,
    title: Rect,
    main: Rect,
    legend: Rect,
    hists: [Rect; 3],
    grid_header: Rect,
    panels: Vec<Rect>,
    /// Panel width, for font sizes.
    panel_w: i32,
}

fn layout(width: u32, n_panels: usize) -> Layout {
    let w = width.max(MIN_WIDTH);
    let s = w as f64 / 1600.0;
    let px = |v: f64| (v * s).round() as i32;
    let pad = px(24.0);
    let gap = px(16.0);
    let title_h = px(130.0);
    let main_h = px(860.0);
    let header_h = px(50.0);
    let main_w = px(1000.0);
    let right_x = pad + main_w + px(24.0);
    let right_w = w as i32 - pad - right_x;
    let legend_h = px(150.0);
    let hist_total = main_h - legend_h;
    let hist_h = hist_total / 3;
    let main_y = title_h;
    let hists = [0, 1, 2].map(|i| Rect {
        x: right_x,
        y: main_y + legend_h + i * hist_h,
        w: right_w,
        h: hist_h,
    });
    let ncols: i32 = match n_panels {
        0..=2 => 2,
        3 => 3,
        _ => 4,
    };
    let panel_w = (w as i32 - 2 * pad - (ncols - 1) * gap) / ncols;
    let panel_h = (panel_w as f64 * 0.82).round() as i32;
    let grid_y = main_y + main_h + header_h;
    let panels = (0..n_panels as i32)
        .map(|i| Rect {
            x: pad + (i % ncols) * (panel_w + gap),
            y: grid_y + (i / ncols) * (panel_h + gap),
            w: panel_w,
            h: panel_h,
        })
        .collect();
    let rows = (n_panels as i32 + ncols - 1) / ncols;
    let h = grid_y + rows * (panel_h + gap) + gap;
    Layout {
        w,
        h: h as u32,
        s,
        title: Rect {
            x: pad,
            y: 0,
            w: w as i32 - 2 * pad,
            h: title_h,
        },
        main: Rect {
            x: pad,
            y: main_y,
            w: main_w,
            h: main_h,
        },
        legend: Rect {
            x: right_x,
            y: main_y,
            w: right_w,
            h: legend_h,
        },
        hists,
        grid_header: Rect {
            x: pad,
            y: main_y + main_h,
            w: w as i32 - 2 * pad,
            h: header_h,
        },
        panels,
        panel_w,
    }
}

/// Labels with their sample counts: (label, count), in label order.
fn label_counts(data: &MapData) -> Vec<(i64, usize)> {
    let mut m: BTreeMap<i64, usize> = BTreeMap::new();
    for &l in &data.labels {
        *m.entry(l).or_insert(0) += 1;
    }
    m.into_iter().collect()
}

/// The labels that get a panel: all of them, or the largest
/// [`MAX_LABEL_PANELS`] classes (ties: smaller label first), in label order.
fn shown_labels(counts: &[(i64, usize)]) -> Vec<(i64, usize)> {
    if counts.len() <= MAX_LABEL_PANELS {
        return counts.to_vec();
    }
    let mut by_size = counts.to_vec();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_size.truncate(MAX_LABEL_PANELS);
    by_size.sort_by_key(|&(l, _)| l);
    by_size
}

/// The size of the image [`render_png`] and [`render_svg`] draw: `style.width`
/// (at least [`MIN_WIDTH`]) by a height that depends only on the width and the number of
/// label panels (see the module documentation).
pub fn image_size(data: &MapData, style: &MapStyle) -> (u32, u32) {
    let n = shown_labels(&label_counts(data)).len();
    let l = layout(style.width, n);
    (l.w, l.h)
}

// ---------------------------------------------------------------------------
// Statistics

struct Region {
    name: &'static str,
    median_var: f64,
    median_conf: f64,
}

struct Panel {
    title: String,
    idx: Vec<u32>,
    regions: Vec<Region>,
}

struct Prepared {
    n: usize,
    e: i32,
    x_max: f64,
    n_labels: usize,
    main: Panel,
    labels: Vec<Panel>,
}

fn median(mut v: Vec<f64>) -> f64 {
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let mid = n / 2;
    let (_, &mut hi, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    if n % 2 == 1 {
        hi
    } else {
        let lo = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

/// The three regions of `idx` (see the module documentation).
fn regions(data: &MapData, idx: &[u32]) -> Vec<Region> {
    let n = idx.len();
    if n == 0 {
        return Vec::new();
    }
    let k = ((REGION_CORE_FRACTION * n as f64).ceil() as usize).clamp(1, n);
    let conf = |i: &u32| data.confidence[*i as usize];
    let var = |i: &u32| data.variability[*i as usize];
    let by_conf = |a: &u32, b: &u32| conf(a).total_cmp(&conf(b)).then(a.cmp(b));
    let medians = |set: &[u32]| {
        (
            median(set.iter().map(var).collect()),
            median(set.iter().map(conf).collect()),
        )
    };
    let mut order = idx.to_vec();
    // Lowest confidence first: hard-to-learn.
    if k < n {
        order.select_nth_unstable_by(k - 1, by_conf);
    }
    let (hv, hc) = medians(&order[..k]);
    // Highest confidence: easy-to-learn (ties: the earlier row is "higher").
    let mut order = idx.to_vec();
    let by_conf_desc = |a: &u32, b: &u32| conf(b).total_cmp(&conf(a)).then(a.cmp(b));
    if k < n {
        order.select_nth_unstable_by(k - 1, by_conf_desc);
    }
    let (ev, ec) = medians(&order[..k]);
    // Highest variability: ambiguous.
    let mut order = idx.to_vec();
    let by_var_desc = |a: &u32, b: &u32| var(b).total_cmp(&var(a)).then(a.cmp(b));
    if k < n {
        order.select_nth_unstable_by(k - 1, by_var_desc);
    }
    let (av, ac) = medians(&order[..k]);
    vec![
        Region {
            name: "easy-to-learn",
            median_var: ev,
            median_conf: ec,
        },
        Region {
            name: "ambiguous",
            median_var: av,
            median_conf: ac,
        },
        Region {
            name: "hard-to-learn",
            median_var: hv,
            median_conf: hc,
        },
    ]
}

fn prepare(data: &MapData) -> Result<Prepared> {
    data.validate()?;
    let n = data.len();
    if n > u32::MAX as usize {
        return Err(CartoError::invalid(format!("data map: {n} samples is too many")));
    }
    let e = data.epochs.iter().copied().max().unwrap_or(1).max(1);
    let max_var = data.variability.iter().copied().fold(0.0, f64::max);
    let x_max = ((max_var / 0.05 - 1e-9).ceil() * 0.05).clamp(0.3, 0.5);
    let counts = label_counts(data);
    let shown = shown_labels(&counts);
    let all: Vec<u32> = (0..n as u32).collect();
    let main = Panel {
        title: format!("all labels ({} samples)", thousands(n)),
        regions: regions(data, &all),
        idx: all,
    };
    let mut slot: BTreeMap<i64, usize> = BTreeMap::new();
    let mut labels: Vec<Panel> = shown
        .iter()
        .enumerate()
        .map(|(p, &(l, c))| {
            slot.insert(l, p);
            Panel {
                title: format!("{} ({} samples)", data.label_name(l), thousands(c)),
                idx: Vec::with_capacity(c),
                regions: Vec::new(),
            }
        })
        .collect();
    for (i, l) in data.labels.iter().enumerate() {
        if let Some(&p) = slot.get(l) {
            labels[p].idx.push(i as u32);
        }
    }
    for p in &mut labels {
        p.regions = regions(data, &p.idx);
    }
    Ok(Prepared {
        n,
        e,
        x_max,
        n_labels: counts.len(),
        main,
        labels,
    })
}

/// 12808 → "12,808".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("ASCII digits"));
    }
    out
}

/// Axis tick labels for counts: 950, 1.2k, 12k, 1.2M.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else {
        format!("{v:.0}")
    }
}

// ---------------------------------------------------------------------------
// Colours

/// The colour of correctness `f` in 0..=1 (viridis over 0..0.9).
fn palette(f: f64) -> RGBColor {
    ViridisRGB::get_color((0.9 * f.clamp(0.0, 1.0)) as f32)
}

fn k_colour(k: i32, e: i32) -> RGBColor {
    palette(k.clamp(0, e) as f64 / e as f64)
}

const INK: RGBColor = RGBColor(33, 33, 33);
const MUTED: RGBColor = RGBColor(90, 90, 90);
const GRID: RGBColor = RGBColor(228, 228, 228);
const AXIS: RGBColor = RGBColor(120, 120, 120);
const BAR: RGBColor = RGBColor(96, 112, 140);

// ---------------------------------------------------------------------------
// Drawing

type DResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// What every drawing function needs besides the data.
struct Ctx {
    /// Scale: width / 1600.
    s: f64,
    /// From this many points a panel is a 2-D histogram.
    threshold: usize,
    /// Vertical text correction in em. plotters' bitmap text (ab_glyph) sits
    /// about a quarter em higher than the same anchor in SVG, so the PNG shifts
    /// its own labels down by this much to centre them like the SVG does.
    tdy: f64,
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

fn sub<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: Rect) -> DrawingArea<DB, Shift> {
    root.clone().shrink((r.x, r.y), (r.w, r.h))
}

/// `s`, or its longest prefix that fits in `max_w` pixels followed by "…".
fn fit<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &str,
    style: &TextStyle,
    max_w: i32,
) -> std::result::Result<String, DrawingAreaErrorKind<DB::ErrorType>> {
    if root.estimate_text_size(s, style)?.0 as i32 <= max_w {
        return Ok(s.to_string());
    }
    let chars: Vec<char> = s.chars().collect();
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let t: String = chars[..mid].iter().chain(std::iter::once(&'…')).collect();
        if root.estimate_text_size(&t, style)?.0 as i32 <= max_w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(chars[..lo].iter().chain(std::iter::once(&'…')).collect())
}

/// Text anchored at `at` (see [`Ctx::tdy`]).
fn text<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    ctx: &Ctx,
    s: impl Into<String>,
    at: (i32, i32),
    style: TextStyle<'static>,
    h: HPos,
    v: VPos,
) -> DResult<DB> {
    let dy = (ctx.tdy * style.font.get_size()).round() as i32;
    root.draw(&Text::new(s.into(), (at.0, at.1 + dy), style.pos(Pos::new(h, v))))
}

fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    data: &MapData,
    prep: &Prepared,
    lay: &Layout,
    ctx: &Ctx,
) -> DResult<DB> {
    let s = ctx.s;
    root.fill(&WHITE)?;

    // Title band.
    let t = lay.title;
    let dense = std::iter::once(&prep.main)
        .chain(&prep.labels)
        .any(|p| p.idx.len() >= ctx.threshold);
    let y = |v: f64| (v * s).round() as i32;
    let title = fit(root, &format!("Data map: {}", data.title), &font(30.0 * s), t.w)?;
    text(root, ctx, title, (t.x, y(18.0)), font(30.0 * s), HPos::Left, VPos::Top)?;
    let plural = |n: usize, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{} {one}s", thousands(n))
        }
    };
    let line1 = format!(
        "{} · {} · {}  —  x: variability (std of the gold-label probability across epochs), y: confidence (its mean), colour: epochs predicted correctly",
        plural(prep.n, "sample"),
        plural(prep.e as usize, "epoch"),
        plural(prep.n_labels, "label"),
    );
    let small = || font(16.0 * s).color(&MUTED);
    text(root, ctx, line1, (t.x, y(62.0)), small(), HPos::Left, VPos::Top)?;
    let line2 = "Regions: easy-to-learn = the 33% most confident samples, hard-to-learn = the 33% least confident, ambiguous = the 33% most variable; each name sits at the median of its most extreme 10%.";
    text(root, ctx, line2, (t.x, y(84.0)), small(), HPos::Left, VPos::Top)?;
    if dense {
        let line3 = format!(
            "Panels with ≥ {} points are 2-D histograms ({DENSITY_BINS}×{DENSITY_BINS} bins): colour = mean correctness of the bin, opacity grows with log(count). No point is dropped.",
            thousands(ctx.threshold)
        );
        text(root, ctx, line3, (t.x, y(106.0)), small(), HPos::Left, VPos::Top)?;
    }

    // Main panel, legend and marginal histograms.
    draw_panel(root, &sub(root, lay.main), data, prep, &prep.main, ctx, 1.0)?;
    draw_legend(root, ctx, lay.legend, prep.e)?;
    draw_histograms(root, ctx, lay, data, prep)?;

    // Per-label grid.
    let g = lay.grid_header;
    let header = if prep.labels.len() < prep.n_labels {
        format!(
            "Per label: {} of {} labels shown (the {} largest classes; the all-labels panel holds every sample)",
            prep.labels.len(),
            prep.n_labels,
            prep.labels.len()
        )
    } else {
        "Per label".to_string()
    };
    text(
        root,
        ctx,
        header,
        (g.x, g.y + g.h / 2),
        font(22.0 * s),
        HPos::Left,
        VPos::Center,
    )?;
    let fs = (lay.panel_w as f64 / (768.0 * s)).clamp(0.5, 1.0);
    for (p, r) in prep.labels.iter().zip(&lay.panels) {
        draw_panel(root, &sub(root, *r), data, prep, p, ctx, fs)?;
    }
    Ok(())
}

/// One scatter (or 2-D histogram) panel. `fs` < 1 shrinks the fonts of the
/// smaller label panels (never below readable minimums).
fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    data: &MapData,
    prep: &Prepared,
    panel: &Panel,
    ctx: &Ctx,
    fs: f64,
) -> DResult<DB> {
    let s = ctx.s;
    let f = s * fs;
    let caption = (24.0 * f).max(18.0 * s);
    let desc = (19.0 * f).max(15.5 * s);
    let tick = (15.0 * f).max(13.0 * s);
    let region = (18.0 * f).max(14.5 * s);
    let (w, _) = area.dim_in_pixel();
    let title = fit(root, &panel.title, &font(caption), w as i32 - (20.0 * s) as i32)?;
    let x_max = prep.x_max;
    let fmt_x = |v: &f64| format!("{v:.2}");
    let fmt_y = |v: &f64| format!("{v:.1}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(caption))
        .margin_right((14.0 * f) as i32)
        .margin_top((4.0 * f) as i32)
        .x_label_area_size((tick * 1.4 + desc * 1.5) as i32)
        .y_label_area_size((tick * 2.2 + desc * 1.7) as i32)
        .build_cartesian_2d(-0.012 * x_max..x_max * 1.012, -0.012..1.012)?;
    chart
        .configure_mesh()
        .x_desc("variability")
        .y_desc("confidence")
        .axis_desc_style(font(desc))
        .label_style(font(tick).color(&MUTED))
        .x_labels(if fs < 0.8 { 5 } else { 8 })
        .y_labels(6)
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .max_light_lines(0)
        .bold_line_style(GRID)
        .axis_style(AXIS)
        .draw()?;

    let (x0, y1) = chart.backend_coord(&(0.0, 0.0));
    let (x1, y0) = chart.backend_coord(&(x_max, 1.0));
    let e = prep.e;
    if panel.idx.len() >= ctx.threshold {
        // 2-D histogram: deterministic bins over [0, x_max] × [0, 1], each bin
        // exactly the pixels between its rounded edges (no seams, no overlap).
        let b = DENSITY_BINS;
        let mut count = vec![0u32; b * b];
        let mut corr = vec![0f64; b * b];
        for &i in &panel.idx {
            let i = i as usize;
            let bx = ((data.variability[i] / x_max * b as f64) as isize).clamp(0, b as isize - 1) as usize;
            let by = ((data.confidence[i] * b as f64) as isize).clamp(0, b as isize - 1) as usize;
            count[by * b + bx] += 1;
            corr[by * b + bx] += correctness(data, i);
        }
        let cmax = count.iter().copied().max().unwrap_or(1).max(1) as f64;
        let lmax = (1.0 + cmax).ln();
        let (w, h) = ((x1 - x0) as f64, (y1 - y0) as f64);
        for by in 0..b {
            let top = y1 - ((by + 1) as f64 * h / b as f64).round() as i32;
            let bottom = y1 - (by as f64 * h / b as f64).round() as i32;
            for bx in 0..b {
                let c = count[by * b + bx];
                if c == 0 {
                    continue;
                }
                let l = x0 + (bx as f64 * w / b as f64).round() as i32;
                let r = x0 + ((bx + 1) as f64 * w / b as f64).round() as i32;
                let alpha = 0.25 + 0.75 * (1.0 + c as f64).ln() / lmax;
                let col = palette(corr[by * b + bx] / c as f64).mix(alpha);
                root.draw(&Rectangle::new(
                    [(l, top), (r.max(l + 1), bottom.max(top + 1))],
                    col.filled(),
                ))?;
            }
        }
    } else {
        let radius = ((2.0 * s).round() as i32).max(2);
        for &i in &panel.idx {
            let i = i as usize;
            let c = k_colour(k_of(data, i, e), e).mix(0.75);
            let at = chart.backend_coord(&(data.variability[i], data.confidence[i]));
            root.draw(&Circle::new(at, radius, c.filled()))?;
        }
    }

    // Region names on light boxes, nudged apart when they would overlap.
    let style = font(region);
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    for r in &panel.regions {
        let (cx, cy) = chart.backend_coord(&(r.median_var.clamp(0.0, x_max), r.median_conf.clamp(0.0, 1.0)));
        let (tw, _) = root.estimate_text_size(r.name, &style)?;
        let (pw, ph) = ((0.45 * region) as i32, (0.35 * region) as i32);
        let (bw, bh) = (tw as i32 + 2 * pw, region.round() as i32 + 2 * ph);
        let bx = (cx - bw / 2).clamp(x0 + 2, (x1 - bw - 2).max(x0 + 2));
        let clamp_y = |y: i32| y.clamp(y0 + 2, (y1 - bh - 2).max(y0 + 2));
        let mut by = clamp_y(cy - bh / 2);
        let overlaps = |y: i32, placed: &[(i32, i32, i32, i32)]| {
            placed
                .iter()
                .any(|&(px, py, pw2, ph2)| bx < px + pw2 && px < bx + bw && y < py + ph2 && py < y + bh)
        };
        if overlaps(by, &placed) {
            // Try below, then above, in steps of the box height.
            for step in 1..8 {
                let down = clamp_y(by + step * (bh + 2));
                if !overlaps(down, &placed) {
                    by = down;
                    break;
                }
                let up = clamp_y(by - step * (bh + 2));
                if !overlaps(up, &placed) {
                    by = up;
                    break;
                }
            }
        }
        placed.push((bx, by, bw, bh));
        root.draw(&Rectangle::new(
            [(bx, by), (bx + bw, by + bh)],
            WHITE.mix(0.85).filled(),
        ))?;
        root.draw(&Rectangle::new(
            [(bx, by), (bx + bw, by + bh)],
            ShapeStyle::from(&INK).stroke_width(1),
        ))?;
        text(
            root,
            ctx,
            r.name,
            (bx + bw / 2, by + bh / 2),
            style.clone(),
            HPos::Center,
            VPos::Center,
        )?;
    }
    Ok(())
}

/// correct_count / epochs of sample `i`, in 0..=1.
fn correctness(data: &MapData, i: usize) -> f64 {
    (data.correct_count[i] as f64 / data.epochs[i].max(1) as f64).clamp(0.0, 1.0)
}

/// The colour class of sample `i`: its correctness in units of 1/E.
fn k_of(data: &MapData, i: usize, e: i32) -> i32 {
    (correctness(data, i) * e as f64).round() as i32
}

/// The correctness legend: "correct in k/E epochs" for each k (2 columns), or
/// a stepped colour bar with one cell per k when E > 11.
fn draw_legend<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, ctx: &Ctx, r: Rect, e: i32) -> DResult<DB> {
    let s = ctx.s;
    let px = |v: f64| (v * s).round() as i32;
    text(
        root,
        ctx,
        "colour: epochs in which the sample was predicted correctly",
        (r.x + px(8.0), r.y + px(10.0)),
        font(17.0 * s),
        HPos::Left,
        VPos::Top,
    )?;
    let top = r.y + px(44.0);
    let avail = r.h - px(44.0) - px(10.0);
    if e <= 11 {
        let rows = (e + 2) / 2;
        let row_h = (avail / rows).min(px(30.0));
        let col_w = (r.w - px(8.0)) / 2;
        let sw = px(16.0);
        for k in 0..=e {
            // Highest correctness first, column by column.
            let pos = e - k;
            let (c, row) = (pos / rows, pos % rows);
            let x = r.x + px(8.0) + c * col_w;
            let y = top + row * row_h;
            let sy = y + (row_h - sw) / 2;
            root.draw(&Rectangle::new([(x, sy), (x + sw, sy + sw)], k_colour(k, e).filled()))?;
            let label = format!("correct in {k}/{e} epochs");
            text(
                root,
                ctx,
                label,
                (x + sw + px(8.0), sy + sw / 2),
                font(16.0 * s),
                HPos::Left,
                VPos::Center,
            )?;
        }
    } else {
        let x0 = r.x + px(8.0);
        let w = r.w - px(32.0);
        let bar_h = px(26.0);
        for k in 0..=e {
            let a = x0 + (k as f64 * w as f64 / (e + 1) as f64).round() as i32;
            let b = x0 + ((k + 1) as f64 * w as f64 / (e + 1) as f64).round() as i32;
            root.draw(&Rectangle::new([(a, top), (b, top + bar_h)], k_colour(k, e).filled()))?;
        }
        let ticks = 5;
        for t in 0..=ticks {
            let k = (t * e + ticks / 2) / ticks;
            let cx = x0 + ((k as f64 + 0.5) * w as f64 / (e + 1) as f64).round() as i32;
            root.draw(&PathElement::new(
                vec![(cx, top + bar_h), (cx, top + bar_h + px(5.0))],
                INK,
            ))?;
            text(
                root,
                ctx,
                format!("{k}/{e}"),
                (cx, top + bar_h + px(8.0)),
                font(15.0 * s),
                HPos::Center,
                VPos::Top,
            )?;
        }
        let note = format!("correct in k/{e} epochs: one colour per k");
        text(
            root,
            ctx,
            note,
            (x0, top + bar_h + px(36.0)),
            font(15.0 * s).color(&MUTED),
            HPos::Left,
            VPos::Top,
        )?;
    }
    Ok(())
}

/// Marginal histograms of confidence, variability (40 bins over the axis
/// range) and correctness (one bar per k/E, in the legend's colours).
fn draw_histograms<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    ctx: &Ctx,
    lay: &Layout,
    data: &MapData,
    prep: &Prepared,
) -> DResult<DB> {
    const BINS: usize = 40;
    let s = ctx.s;
    let e = prep.e;
    let mut conf = vec![0usize; BINS];
    let mut var = vec![0usize; BINS];
    let mut corr = vec![0usize; e as usize + 1];
    for i in 0..prep.n {
        conf[((data.confidence[i] * BINS as f64) as isize).clamp(0, BINS as isize - 1) as usize] += 1;
        var[((data.variability[i] / prep.x_max * BINS as f64) as isize).clamp(0, BINS as isize - 1) as usize] += 1;
        corr[k_of(data, i, e).clamp(0, e) as usize] += 1;
    }
    type Bar = (f64, f64, usize, RGBColor);
    let conf_bars: Vec<Bar> = conf
        .iter()
        .enumerate()
        .map(|(b, &c)| (b as f64 / BINS as f64, (b + 1) as f64 / BINS as f64, c, BAR))
        .collect();
    let w = prep.x_max / BINS as f64;
    let var_bars: Vec<Bar> = var
        .iter()
        .enumerate()
        .map(|(b, &c)| (b as f64 * w, (b + 1) as f64 * w, c, BAR))
        .collect();
    let half = 0.38 / e as f64;
    let corr_bars: Vec<Bar> = corr
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let x = k as f64 / e as f64;
            (x - half, x + half, c, k_colour(k as i32, e))
        })
        .collect();
    let pad = 0.6 / e as f64;
    let specs: [(&str, std::ops::Range<f64>, &Vec<Bar>, usize); 3] = [
        ("confidence", 0.0..1.0, &conf_bars, 1),
        ("variability", 0.0..prep.x_max, &var_bars, 2),
        ("correctness", -pad..1.0 + pad, &corr_bars, 1),
    ];
    for (r, (name, range, bars, digits)) in lay.hists.iter().zip(specs) {
        let area = sub(root, *r);
        let ymax = bars.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.1;
        let fmt_x = move |v: &f64| format!("{v:.digits$}");
        let fmt_y = |v: &f64| compact(*v);
        let mut chart = ChartBuilder::on(&area)
            .caption(name, font(19.0 * s))
            .margin_right((14.0 * s) as i32)
            .margin_bottom((4.0 * s) as i32)
            .x_label_area_size((30.0 * s) as i32)
            .y_label_area_size((64.0 * s) as i32)
            .build_cartesian_2d(range, 0.0..ymax)?;
        chart
            .configure_mesh()
            .y_desc("samples")
            .axis_desc_style(font(14.0 * s).color(&MUTED))
            .label_style(font(14.0 * s).color(&MUTED))
            .x_labels(6)
            .y_labels(4)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .max_light_lines(0)
            .disable_x_mesh()
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .draw()?;
        chart.draw_series(
            bars.iter()
                .filter(|b| b.2 > 0)
                .map(|&(a, b, c, col)| Rectangle::new([(a, 0.0), (b, c as f64)], col.filled())),
        )?;
    }
    Ok(())
}

fn drawing_error<E: std::fmt::Display>(e: E) -> CartoError {
    CartoError::internal(format!("drawing the data map: {e}"))
}

/// Renders the map into an RGB buffer (3 bytes per pixel, row-major):
/// `(width, height, pixels)`. [`render_png`] encodes exactly this buffer.
pub fn render_rgb(data: &MapData, style: &MapStyle) -> Result<(u32, u32, Vec<u8>)> {
    register_font();
    let prep = prepare(data)?;
    let lay = layout(style.width, prep.labels.len());
    let mut buf = vec![255u8; lay.w as usize * lay.h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (lay.w, lay.h)).into_drawing_area();
        let ctx = Ctx {
            s: lay.s,
            threshold: style.density_threshold.max(1),
            tdy: 0.22,
        };
        draw_figure(&root, data, &prep, &lay, &ctx).map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok((lay.w, lay.h, buf))
}

/// A hidden name beside `path` for writing before the rename.
fn temp_beside(path: &Path, ext: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "datamap".into());
    path.with_file_name(format!(".{name}.{}.tmp.{ext}", std::process::id()))
}

fn finish(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        CartoError::io(path, e)
    })
}

/// Writes the map as a PNG (atomically: written beside, then renamed).
pub fn render_png(data: &MapData, style: &MapStyle, path: &Path) -> Result<()> {
    let (w, h, buf) = render_rgb(data, style)?;
    let tmp = temp_beside(path, "png");
    let res = (|| -> std::result::Result<(), String> {
        let mut backend = BitMapBackend::new(&tmp, (w, h));
        backend.blit_bitmap((0, 0), (w, h), &buf).map_err(|e| e.to_string())?;
        backend.present().map_err(|e| e.to_string())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(CartoError::internal(format!(
            "{}: writing the PNG: {e}",
            path.display()
        )));
    }
    finish(&tmp, path)
}

/// Writes the map as an SVG (atomically). Panels with at least
/// [`SVG_DENSITY_THRESHOLD`] points (or `density_threshold`, if lower) are 2-D
/// histograms, so the file stays small.
pub fn render_svg(data: &MapData, style: &MapStyle, path: &Path) -> Result<()> {
    register_font();
    let prep = prepare(data)?;
    let lay = layout(style.width, prep.labels.len());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (lay.w, lay.h)).into_drawing_area();
        let ctx = Ctx {
            s: lay.s,
            threshold: style.density_threshold.clamp(1, SVG_DENSITY_THRESHOLD),
            tdy: 0.0,
        };
        draw_figure(&root, data, &prep, &lay, &ctx).map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    let tmp = temp_beside(path, "svg");
    std::fs::write(&tmp, svg).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CartoError::io(path, e)
    })?;
    finish(&tmp, path)
}
