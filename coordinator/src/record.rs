//! `job.json`: the one typed, versioned record of a job. The coordinator
//! writes it to `OUT/job.json` (for people and for `carto select`/`suspects`/
//! `map`) and to its state directory (what a restarted `carto serve` resumes
//! from); every reader goes through [`JobRecord::read`].

use std::path::Path;

use carto_common::proto::v1 as pb;
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};
use serde::{Deserialize, Serialize};

use crate::outputs;

/// Bumped when a field changes meaning or a required one is added; readers
/// accept this version and older (records without the field are version 1).
pub const RECORD_VERSION: u32 = 2;

/// A job's lifecycle state as `job.json` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RecordState {
    pub fn from_pb(s: pb::JobState) -> Self {
        match s {
            pb::JobState::Running => RecordState::Running,
            pb::JobState::Succeeded => RecordState::Succeeded,
            pb::JobState::Failed => RecordState::Failed,
            pb::JobState::Cancelled => RecordState::Cancelled,
            pb::JobState::Queued | pb::JobState::Unspecified => RecordState::Queued,
        }
    }

    pub fn to_pb(self) -> pb::JobState {
        match self {
            RecordState::Queued => pb::JobState::Queued,
            RecordState::Running => pb::JobState::Running,
            RecordState::Succeeded => pb::JobState::Succeeded,
            RecordState::Failed => pb::JobState::Failed,
            RecordState::Cancelled => pb::JobState::Cancelled,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RecordState::Succeeded | RecordState::Failed | RecordState::Cancelled)
    }
}

/// The dataset a job trains on, as loaded at submit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Absolute path, symlinks resolved.
    pub path: String,
    pub rows: u64,
    pub classes: u32,
    #[serde(default)]
    pub label_names: Option<Vec<String>>,
}

/// One committed epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: u32,
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
    #[serde(default)]
    pub samples_per_sec: f64,
    #[serde(default)]
    pub train_seconds: f64,
    #[serde(default)]
    pub wall_seconds: f64,
    #[serde(default)]
    pub eval_loss: Option<f64>,
    #[serde(default)]
    pub eval_accuracy: Option<f64>,
    /// External jobs: samples with no row in this epoch (a `drop_last` loader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_samples: Option<u64>,
}

impl From<&pb::EpochSummary> for EpochRecord {
    fn from(e: &pb::EpochSummary) -> Self {
        EpochRecord {
            epoch: e.epoch,
            samples: e.samples,
            loss: e.loss,
            accuracy: e.accuracy,
            samples_per_sec: e.samples_per_sec,
            train_seconds: e.train_seconds,
            wall_seconds: e.wall_seconds,
            eval_loss: e.eval_loss,
            eval_accuracy: e.eval_accuracy,
            missing_samples: None,
        }
    }
}

impl From<&EpochRecord> for pb::EpochSummary {
    fn from(e: &EpochRecord) -> Self {
        pb::EpochSummary {
            epoch: e.epoch,
            samples: e.samples,
            loss: e.loss,
            accuracy: e.accuracy,
            samples_per_sec: e.samples_per_sec,
            train_seconds: e.train_seconds,
            wall_seconds: e.wall_seconds,
            eval_loss: e.eval_loss,
            eval_accuracy: e.eval_accuracy,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub created_unix_ms: i64,
    pub started_unix_ms: i64,
    pub finished_unix_ms: i64,
    pub queued_seconds: f64,
    pub run_seconds: f64,
    pub train_seconds: f64,
}

/// How the job's labels look wrong (see [`crate::label_errors`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelErrorsRecord {
    /// The map's epochs the mislabel score is over: [start, end), 0-based.
    pub suspect_epochs: [u32; 2],
    /// How that window was chosen.
    pub window: String,
    /// With threshold samples: the AUM below which a sample is suspect (the
    /// runs' mean), each run's, and how many samples are suspect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspects: Option<u64>,
    /// Per class (by given label): samples, suspects, their share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noise_rate: Vec<ClassNoise>,
    /// The most frequent (given label → most predicted class) among suspects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confused_pairs: Vec<ConfusedPair>,
    /// Suspects by given label (rows) and most predicted class (columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_matrix: Option<Vec<Vec<u64>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassNoise {
    pub label: i64,
    pub label_name: String,
    pub samples: u64,
    pub suspects: u64,
    pub rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfusedPair {
    pub given: i64,
    pub given_name: String,
    pub likely: i64,
    pub likely_name: String,
    pub count: u64,
}

/// Where the outputs are, relative to `OUT/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputsRecord {
    pub metrics: String,
    pub dynamics: String,
    pub datamap: Vec<String>,
    pub suspects: String,
}

impl Default for OutputsRecord {
    fn default() -> Self {
        OutputsRecord {
            metrics: outputs::METRICS_FILE.into(),
            dynamics: outputs::DYNAMICS_DIR.into(),
            datamap: vec![crate::reports::DATAMAP_PNG.into(), crate::reports::DATAMAP_SVG.into()],
            suspects: crate::reports::SUSPECTS_CSV.into(),
        }
    }
}

fn version_one() -> u32 {
    1
}

/// `job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    #[serde(default = "version_one")]
    pub record_version: u32,
    #[serde(default)]
    pub carto_version: String,
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: RecordState,
    #[serde(default)]
    pub error: Option<String>,
    /// Outputs beyond the metrics that could not be written (data map, report).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The spec with every default written out.
    pub spec: JobSpec,
    #[serde(default)]
    pub restarts: u32,
    /// Why the job last had to be re-formed.
    #[serde(default)]
    pub faults: Option<String>,
    pub created_unix_ms: i64,
    pub dataset: DatasetRecord,
    #[serde(default)]
    pub world_size: u32,
    #[serde(default)]
    pub generation: u64,
    /// Worker ids by rank, in the last generation.
    #[serde(default)]
    pub workers: Vec<String>,
    #[serde(default)]
    pub epochs: Vec<EpochRecord>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub outputs: OutputsRecord,
    /// Written at the job's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_errors: Option<LabelErrorsRecord>,
}

impl JobRecord {
    /// Reads and checks a record; errors name the file.
    pub fn read(path: &Path) -> Result<JobRecord> {
        let text = std::fs::read(path).map_err(|e| CartoError::io(path, e))?;
        Self::parse(&text).map_err(|e| CartoError::invalid(format!("{}: {e}", path.display())))
    }

    /// Parses a record (the error says what is wrong, without the file's name).
    pub fn parse(bytes: &[u8]) -> std::result::Result<JobRecord, String> {
        let rec: JobRecord = serde_json::from_slice(bytes).map_err(|e| format!("not a carto job record: {e}"))?;
        if rec.record_version > RECORD_VERSION {
            return Err(format!(
                "record_version {} is newer than this carto reads ({RECORD_VERSION}): use a newer carto",
                rec.record_version
            ));
        }
        if rec.id.is_empty() {
            return Err("the job id is empty".into());
        }
        Ok(rec)
    }

    /// The record in `job.json` beside a metrics file, if there is a readable one.
    pub fn beside(metrics: &Path) -> Option<JobRecord> {
        Self::read(&metrics.parent().unwrap_or(Path::new(".")).join(outputs::JOB_FILE)).ok()
    }

    /// The job's spec with `data` set to the dataset's recorded absolute path.
    pub fn resolved_spec(&self) -> JobSpec {
        let mut spec = self.spec.clone();
        if !self.dataset.path.is_empty() {
            spec.data = Some(self.dataset.path.clone());
        }
        spec
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a job record serialises") + "\n"
    }

    /// Writes the record atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::locking::assert_no_state_lock("writing a job record");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| CartoError::io(dir, e))?;
        }
        outputs::write_text_atomic(path, &self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobRecord {
        JobRecord {
            record_version: RECORD_VERSION,
            carto_version: "0.0.0".into(),
            id: "job-1".into(),
            name: Some("sst2".into()),
            state: RecordState::Running,
            error: None,
            warnings: vec![],
            spec: JobSpec { data: Some("d.csv".into()), label_col: Some("label".into()), ..Default::default() },
            restarts: 1,
            faults: Some("rank 1 lost".into()),
            created_unix_ms: 5,
            dataset: DatasetRecord { path: "/data/d.csv".into(), rows: 10, classes: 2, label_names: Some(vec!["neg".into(), "pos".into()]) },
            world_size: 2,
            generation: 3,
            workers: vec!["w-1".into(), "w-2".into()],
            epochs: vec![EpochRecord { epoch: 0, samples: 10, loss: 0.5, accuracy: 0.75, eval_loss: Some(0.6), ..Default::default() }],
            timings: Timings { created_unix_ms: 5, started_unix_ms: 6, ..Default::default() },
            outputs: OutputsRecord::default(),
            label_errors: None,
        }
    }

    #[test]
    fn a_record_round_trips_and_keeps_the_documented_keys() {
        let rec = sample();
        let json = rec.to_json();
        assert_eq!(JobRecord::parse(json.as_bytes()).unwrap(), rec);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        // The keys people and scripts read.
        assert_eq!(v["state"], "running");
        assert_eq!(v["dataset"]["path"], "/data/d.csv");
        assert_eq!(v["epochs"][0]["accuracy"], 0.75);
        assert_eq!(v["timings"]["started_unix_ms"], 6);
        assert_eq!(v["outputs"]["metrics"], "metrics.parquet");
        assert_eq!(v["record_version"], RECORD_VERSION);
    }

    #[test]
    fn version_one_records_without_the_version_field_still_read() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v.as_object_mut().unwrap().remove("record_version");
        v.as_object_mut().unwrap().remove("outputs");
        let rec = JobRecord::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(rec.record_version, 1);
        assert_eq!(rec.generation, 3);
    }

    #[test]
    fn unreadable_or_future_records_are_refused_with_a_reason() {
        assert!(JobRecord::parse(b"{\"id\": ").unwrap_err().contains("not a carto job record"));
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["record_version"] = (RECORD_VERSION + 1).into();
        assert!(JobRecord::parse(v.to_string().as_bytes()).unwrap_err().contains("newer than this carto"));
        v["record_version"] = RECORD_VERSION.into();
        v["state"] = "exploded".into();
        assert!(JobRecord::parse(v.to_string().as_bytes()).is_err());
    }
}
