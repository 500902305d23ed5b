//! What a restarted coordinator resumes from: the job records in its
//! `--state-dir`, the committed epochs' dynamics in each job's output
//! directory (the durable form of the accumulators), and the last epoch
//! checkpoint that rank 0 wrote before reporting that epoch.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use carto_common::metrics::SampleAccumulators;
use carto_common::proto::v1 as pb;
use carto_common::{CartoError, Result};

use crate::outputs::{self, DYNAMICS_DIR};
use crate::recompute::{self, EpochRange};

/// `DIR/epoch-K.safetensors`: the name the worker writes (worker::checkpoint).
pub fn checkpoint_path(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("epoch-{epoch}.safetensors"))
}

/// A job record found in the state directory.
pub struct StoredJob {
    pub dir: PathBuf,
    pub record: serde_json::Value,
}

/// The job records under `STATE/jobs/*/job.json`, oldest first.
pub fn stored_jobs(state_dir: &Path) -> Result<Vec<StoredJob>> {
    let jobs = state_dir.join("jobs");
    let Ok(entries) = std::fs::read_dir(&jobs) else { return Ok(vec![]) };
    let mut found = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path().join(outputs::JOB_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let record: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CartoError::internal(format!("{}: {e}", path.display())))?;
        found.push(StoredJob { dir: e.path(), record });
    }
    found.sort_by_key(|j| j.record["created_unix_ms"].as_i64().unwrap_or(0));
    Ok(found)
}

/// The committed epochs of a job's output: removes unfinished (pending)
/// partitions, counts the contiguous `epoch=0..K` directories and folds them
/// into accumulators. Returns (accumulators, K).
pub fn committed_dynamics(out: &Path, labels: &[i64]) -> Result<(SampleAccumulators, u32)> {
    let dir = out.join(DYNAMICS_DIR);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".epoch=") && name.ends_with(".pending") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let mut committed = 0u32;
    while outputs::dynamics_part(out, committed, 0).parent().is_some_and(Path::is_dir) {
        committed += 1;
    }
    if committed == 0 {
        return Ok((SampleAccumulators::new(labels.len()), 0));
    }
    let r = recompute::recompute(&dir, EpochRange { start: 0, end: Some(committed) })?;
    if r.info.labels != labels {
        return Err(CartoError::internal(format!(
            "{}: the stored dynamics do not match the dataset's labels",
            dir.display()
        )));
    }
    Ok((r.acc, committed))
}

/// Loss and accuracy of one committed epoch, from its dynamics (for epochs
/// committed just before a crash, before the job record could say so).
pub fn epoch_summary(out: &Path, epoch: u32) -> Result<pb::EpochSummary> {
    let dir = outputs::dynamics_part(out, epoch, 0).parent().expect("epoch dir").to_path_buf();
    let mut samples = 0u64;
    let mut loss = 0f64;
    let mut correct = 0u64;
    for e in std::fs::read_dir(&dir).map_err(|e| CartoError::io(&dir, e))?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".parquet") || name.starts_with('.') {
            continue;
        }
        let b = recompute::read_metrics(&e.path())?;
        let l = b.column_by_name("loss").ok_or_else(|| CartoError::internal("loss column"))?;
        let c = b.column_by_name("correct").ok_or_else(|| CartoError::internal("correct column"))?;
        samples += b.num_rows() as u64;
        loss += l.as_primitive::<arrow::datatypes::Float64Type>().values().iter().sum::<f64>();
        correct += c.as_boolean().true_count() as u64;
        debug_assert_eq!(c.null_count(), 0);
    }
    Ok(pb::EpochSummary {
        epoch,
        samples,
        loss: loss / samples.max(1) as f64,
        accuracy: correct as f64 / samples.max(1) as f64,
        ..Default::default()
    })
}

/// An epoch summary as `job.json` records it.
pub fn summary_from_record(v: &serde_json::Value) -> pb::EpochSummary {
    pb::EpochSummary {
        epoch: v["epoch"].as_u64().unwrap_or(0) as u32,
        samples: v["samples"].as_u64().unwrap_or(0),
        loss: v["loss"].as_f64().unwrap_or(0.0),
        accuracy: v["accuracy"].as_f64().unwrap_or(0.0),
        samples_per_sec: v["samples_per_sec"].as_f64().unwrap_or(0.0),
        train_seconds: v["train_seconds"].as_f64().unwrap_or(0.0),
        wall_seconds: v["wall_seconds"].as_f64().unwrap_or(0.0),
        eval_loss: v["eval_loss"].as_f64(),
        eval_accuracy: v["eval_accuracy"].as_f64(),
    }
}
