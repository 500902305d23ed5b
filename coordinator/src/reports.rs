//! The human-facing outputs drawn from `metrics.parquet`: the data map
//! (`datamap.png`, `datamap.svg`) and the mislabel report (`suspects.csv`),
//! written at each job's end and by `carto map` / `carto suspects`.

use std::path::{Path, PathBuf};

use carto_common::dataset::{self, Features};
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};

use crate::datamap::{self, MapData, MapStyle};
use crate::outputs;
use crate::suspects::{self, Context, Suspect};

pub const DATAMAP_PNG: &str = "datamap.png";
pub const DATAMAP_HTML: &str = "datamap.html";
pub const DATAMAP_SVG: &str = "datamap.svg";
pub const SUSPECTS_CSV: &str = "suspects.csv";
/// Rows of the `suspects.csv` a job writes (`carto suspects --top K` for more).
pub const SUSPECTS_AT_JOB_END: usize = 1000;

/// Where a metrics file's job lives: its spec, from the `job.json` beside it.
pub fn job_spec_beside(metrics: &Path) -> Option<JobSpec> {
    crate::record::JobRecord::beside(metrics).map(|r| r.resolved_spec())
}

/// Renders the data map of `metrics` to `path` (.png, .svg or .html by
/// extension; a page of more than `max_points` samples is sampled).
pub fn write_map(metrics: &Path, path: &Path, title: &str, max_points: usize) -> Result<()> {
    let static_map = |render: fn(&MapData, &MapStyle, &Path) -> Result<()>| {
        let mut data = MapData::from_metrics_file(metrics)?;
        data.title = title.to_string();
        render(&data, &MapStyle::default(), path)
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => static_map(datamap::render_png),
        Some("svg") => static_map(datamap::render_svg),
        Some("html") => {
            let table = crate::recompute::read_metrics(metrics)?;
            let (rows, ctx) = suspects_report_of(metrics, &table, SUSPECTS_AT_JOB_END, None, None, None)?;
            let page = crate::datamap_html::Page {
                title,
                metrics: &table,
                label_names: ctx.label_names.as_deref(),
                ids: ctx.ids.as_deref(),
                texts: ctx.texts.as_deref(),
                suspects: &rows,
                max_points,
            };
            crate::datamap_html::write(&page, path)
        }
        _ => Err(CartoError::invalid(format!("--out {}: expected a .png, .svg or .html file name", path.display()))),
    }
}

/// The suspects of a metrics file, with the most predicted class from the
/// dynamics beside it (when present) and the text/ids for context.
pub fn suspects_report(
    metrics_path: &Path,
    top: usize,
    data: Option<&Path>,
    text_col: Option<&str>,
    dynamics: Option<&Path>,
) -> Result<(Vec<Suspect>, Context)> {
    let metrics = crate::recompute::read_metrics(metrics_path)?;
    suspects_report_of(metrics_path, &metrics, top, data, text_col, dynamics)
}

/// [`suspects_report`] of a metrics file already read (`metrics`, read from `metrics_path`).
pub fn suspects_report_of(
    metrics_path: &Path,
    metrics: &arrow::array::RecordBatch,
    top: usize,
    data: Option<&Path>,
    text_col: Option<&str>,
    dynamics: Option<&Path>,
) -> Result<(Vec<Suspect>, Context)> {
    let what = metrics_path.display().to_string();
    let mut rows = suspects::rank(metrics, top, &what)?;
    let default_dynamics = metrics_path.parent().unwrap_or(Path::new(".")).join(outputs::DYNAMICS_DIR);
    let dynamics = dynamics.map(Path::to_path_buf).or_else(|| default_dynamics.is_dir().then_some(default_dynamics));
    if let Some(dir) = dynamics {
        suspects::add_most_predicted(&mut rows, &dir)?;
    }
    let mut ctx = Context {
        label_names: suspects::label_names_of(metrics_path),
        score_epochs: suspects::score_epochs_of(metrics_path),
        ..Default::default()
    };
    if metrics.column_by_name("id").is_some() {
        ctx.ids = Some(suspects::column_text(metrics, "id", &what)?);
    }
    // The text: from --data/--text-col, else from the job's own spec.
    let spec = job_spec_beside(metrics_path);
    let text_col = text_col.map(str::to_string).or_else(|| spec.as_ref().and_then(|s| s.text_col.clone()));
    let data: Option<PathBuf> = data.map(Path::to_path_buf).or_else(|| spec.as_ref().and_then(|s| s.data.clone()).map(PathBuf::from));
    if let (Some(col), Some(path)) = (text_col, data) {
        let table = dataset::read_table(&path)?;
        if table.num_rows() != metrics.num_rows() {
            return Err(CartoError::invalid(format!(
                "{}: {} rows, but {what} has {}",
                path.display(),
                table.num_rows(),
                metrics.num_rows()
            )));
        }
        ctx.texts = Some(suspects::column_text(&table, &col, &path.display().to_string())?);
    }
    Ok((rows, ctx))
}

/// A job's maps' title: its name (or its dataset's file name), model and epochs.
pub fn job_title(spec: &JobSpec) -> String {
    let name = spec.name.clone().or_else(|| {
        spec.data.as_deref().and_then(|d| Path::new(d).file_name()).map(|f| f.to_string_lossy().into_owned())
    });
    format!("{} — {} model, {} epochs", name.unwrap_or_default(), spec.model(), spec.epochs())
}

/// Writes the data map and the suspects of a finished job into `out`.
/// Returns one line per output that could not be written (the job's
/// metrics stand regardless).
pub fn write_job_reports(out: &Path, spec: &JobSpec, texts: Option<Vec<String>>) -> Vec<String> {
    let metrics = out.join(outputs::METRICS_FILE);
    let mut problems = Vec::new();
    let title = job_title(spec);
    for name in [DATAMAP_PNG, DATAMAP_SVG] {
        let path = out.join(name);
        let tmp = outputs::in_progress_path(&path).with_extension(path.extension().unwrap_or_default());
        match write_map(&metrics, &tmp, &title, crate::datamap_html::MAX_POINTS).and_then(|_| std::fs::rename(&tmp, &path).map_err(|e| CartoError::io(&path, e))) {
            Ok(()) => {}
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    let report = (|| -> Result<()> {
        let what = metrics.display().to_string();
        let table = crate::recompute::read_metrics(&metrics)?;
        let mut rows = suspects::rank(&table, SUSPECTS_AT_JOB_END, &what)?;
        suspects::add_most_predicted(&mut rows, &out.join(outputs::DYNAMICS_DIR))?;
        let ctx = Context {
            label_names: suspects::label_names_of(&metrics),
            ids: table.column_by_name("id").map(|_| suspects::column_text(&table, "id", &what)).transpose()?,
            texts,
            score_epochs: suspects::score_epochs_of(&metrics),
        };
        let mut buf = Vec::new();
        suspects::write_csv(&rows, &ctx, &mut buf)?;
        outputs::write_text_atomic(&out.join(SUSPECTS_CSV), &String::from_utf8_lossy(&buf))?;
        let page = crate::datamap_html::Page {
            title: &title,
            metrics: &table,
            label_names: ctx.label_names.as_deref(),
            ids: ctx.ids.as_deref(),
            texts: ctx.texts.as_deref(),
            suspects: &rows,
            max_points: crate::datamap_html::MAX_POINTS,
        };
        crate::datamap_html::write(&page, &out.join(DATAMAP_HTML)).map_err(|e| CartoError::invalid(format!("{DATAMAP_HTML}: {e}")))
    })();
    if let Err(e) = report {
        problems.push(format!("{SUSPECTS_CSV}: {e}"));
    }
    problems
}

/// The text column of a text job's dataset, for the report.
pub fn job_texts(spec: &JobSpec) -> Option<Vec<String>> {
    spec.text_col.as_ref()?;
    match dataset::load(&spec.dataset_spec().ok()?).ok()?.features {
        Features::Text(t) => Some(t),
        _ => None,
    }
}
