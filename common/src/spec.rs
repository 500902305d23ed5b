//! The job spec: one definition serves `carto run`'s flags (clap), `JOB.toml`
//! (serde, the same names with `_` for `-`) and the wire (`proto::v1::JobSpec`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetSpec, FeatureSource};
use crate::proto::v1 as pb;
use crate::{CartoError, Result};

/// Defaults, documented in the README's flag table.
pub mod defaults {
    pub const HIDDEN: u32 = 256;
    pub const EPOCHS: u32 = 5;
    pub const BATCH_SIZE: u32 = 64;
    pub const SEED: u64 = 42;
    pub const WORKERS: u32 = 1;
    pub const EMBED_DIM: u32 = 64;
    pub const HASH_BITS: u32 = 20;
    pub const MAX_LEN: u32 = 128;
    /// Adam's learning rate per model family.
    pub fn lr(model: &str) -> f64 {
        match model {
            "bert" | "roberta" => 2e-5,
            _ => 1e-3,
        }
    }
}

pub const MODELS: &[&str] = &["linear", "mlp", "bow", "bert", "roberta"];

/// A cartography job. `None` means "the default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Dataset file: Parquet, CSV or JSONL (by extension).
    #[arg(long, value_name = "PATH")]
    pub data: Option<String>,
    /// Column holding the gold label (integers are class indices; strings are mapped in sorted order).
    #[arg(long, value_name = "COL")]
    pub label_col: Option<String>,
    /// Column holding text (for --model bow|bert|roberta).
    #[arg(long, value_name = "COL")]
    pub text_col: Option<String>,
    /// Numeric feature columns, comma separated.
    #[arg(long, value_name = "A,B,..", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_cols: Vec<String>,
    /// One column holding a list of numbers per row.
    #[arg(long, value_name = "COL")]
    pub features_col: Option<String>,
    /// The user's id column, copied to the outputs with its original type.
    #[arg(long, value_name = "COL")]
    pub id_col: Option<String>,
    /// linear | mlp | bow | bert | roberta [default: bow for text, mlp for numbers].
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Hidden width of the mlp [default: 256].
    #[arg(long, value_name = "H")]
    pub hidden: Option<u32>,
    /// Training epochs, each one recorded [default: 5].
    #[arg(long, value_name = "N")]
    pub epochs: Option<u32>,
    /// Global batch size, split evenly across workers [default: 64].
    #[arg(long, value_name = "B")]
    pub batch_size: Option<u32>,
    /// Adam learning rate [default: 1e-3; bert/roberta 2e-5].
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Seed of initialisation and shuffling [default: 42].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Worker processes (ranks) training one model data-parallel [default: 1].
    #[arg(long, value_name = "N")]
    pub workers: Option<u32>,
    /// Intra-op threads per worker [default: cores / workers].
    #[arg(long, value_name = "T")]
    pub threads_per_worker: Option<u32>,
    /// train: record during the training forward pass (the paper's choice); eval: an extra no-grad pass per epoch [default: train].
    #[arg(long, value_name = "PASS")]
    pub dynamics_pass: Option<String>,
    /// cpu | cuda | cuda:N [default: cpu]. cuda: rank r on GPU r (one GPU per
    /// rank); cuda:N: one worker on GPU N.
    #[arg(long, value_name = "DEV")]
    pub device: Option<String>,
    /// Hugging Face save_pretrained directory (bert/roberta).
    #[arg(long, value_name = "DIR")]
    pub pretrained: Option<String>,
    /// Maximum tokens per text (bert/roberta) [default: 128].
    #[arg(long, value_name = "L")]
    pub max_len: Option<u32>,
    /// bert/roberta: fine-tune only the last N encoder layers and the head (0 = the head only); the frozen layers' outputs are computed once per text and cached [default: all layers].
    #[arg(long, value_name = "N")]
    pub train_layers: Option<u32>,
    /// bert/roberta: batch texts of similar length (transformers' group_by_length: mega-batches of 50 batches sorted by length), less padding.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub group_by_length: Option<bool>,
    /// Two more training runs in which a random 1/(K+1) of the samples is
    /// moved to a fake extra class (AUM threshold samples, Pleiss et al.
    /// 2020): their margins calibrate `is_suspect`. Triples the training.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub threshold_samples: Option<bool>,
    /// The epochs the mislabel score is computed over, A..B (0-based, B
    /// excluded) [default: chosen: with --eval-data the epochs up to the best
    /// held-out accuracy, else all].
    #[arg(long, value_name = "A..B")]
    pub suspect_epochs: Option<String>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<String>,
    /// bow: embedding width [default: 64].
    #[arg(long, value_name = "D")]
    pub embed_dim: Option<u32>,
    /// bow: log2 of the number of hash buckets [default: 20].
    #[arg(long, value_name = "BITS")]
    pub hash_bits: Option<u32>,
    /// A name shown by `carto list`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Internal: switch off recording (benchmarks of its overhead).
    #[arg(long, hide = true)]
    pub record_dynamics: Option<bool>,
    /// A held-out set with the same columns, evaluated after every epoch (accuracy in job.json).
    #[arg(long, value_name = "PATH")]
    pub eval_data: Option<String>,
    /// Write the trained parameters to OUT/model.safetensors (rank 0).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub save_model: Option<bool>,
    /// Who trains: "carto" (carto-workers) or "external" (the user's own
    /// loop, through carto's Python `Recorder`). JOB.toml and SubmitJob only.
    #[arg(skip)]
    pub trainer: Option<String>,
    /// External jobs: sample ids are 0..num_samples.
    #[arg(skip)]
    pub num_samples: Option<u64>,
    /// External jobs: classes (logits per row).
    #[arg(skip)]
    pub num_classes: Option<u32>,
    /// External jobs, optional: class names by index.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_names: Vec<String>,
    /// External jobs: the ranks that will join [1].
    #[arg(skip)]
    pub world_size: Option<u32>,
}

/// `trainer = "external"`: the user's own training loop reports.
pub const EXTERNAL: &str = "external";
/// Samples an external job may have (the coordinator keeps tables of this length).
pub const MAX_EXTERNAL_SAMPLES: u64 = 1 << 32;
/// Logits per row an external job may have.
pub const MAX_EXTERNAL_CLASSES: u32 = 100_000;

/// A device as `--device` names it: `cpu`, `cuda` (the GPU follows the local
/// rank) or `cuda:N` (GPU N of those the process sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(Option<u32>),
}

impl DeviceSpec {
    /// Parses `cpu | cuda | cuda:N`; anything else is one line naming the field.
    pub fn parse(s: &str) -> Result<DeviceSpec> {
        let index = |i: &str| i.parse::<u32>().ok().filter(|_| i.bytes().all(|b| b.is_ascii_digit()));
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(None)),
            _ => match s.strip_prefix("cuda:").and_then(index) {
                Some(i) => Ok(DeviceSpec::Cuda(Some(i))),
                None => Err(CartoError::invalid(format!(
                    "device (--device) must be cpu, cuda or cuda:N (N a GPU index), got '{s}'"
                ))),
            },
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl JobSpec {
    /// Parses a `JOB.toml`; errors name the file and the offending field.
    pub fn from_toml(text: &str, path: &str) -> Result<JobSpec> {
        toml::from_str(text).map_err(|e| {
            CartoError::invalid(format!("{path}: {}", e.to_string().replace('\n', " ").trim()))
        })
    }

    pub fn is_text(&self) -> bool {
        non_empty(&self.text_col).is_some()
    }

    pub fn model(&self) -> &str {
        match non_empty(&self.model) {
            Some(m) => m,
            None if self.is_text() => "bow",
            None => "mlp",
        }
    }
    pub fn hidden(&self) -> u32 {
        self.hidden.unwrap_or(defaults::HIDDEN)
    }
    pub fn epochs(&self) -> u32 {
        self.epochs.unwrap_or(defaults::EPOCHS)
    }
    pub fn batch_size(&self) -> u32 {
        self.batch_size.unwrap_or(defaults::BATCH_SIZE)
    }
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or_else(|| defaults::lr(self.model()))
    }
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(defaults::SEED)
    }
    /// The job's trainer is the user's own loop.
    pub fn is_external(&self) -> bool {
        self.trainer.as_deref() == Some(EXTERNAL)
    }

    pub fn workers(&self) -> u32 {
        if self.is_external() {
            return self.world_size.unwrap_or(1);
        }
        self.workers.unwrap_or(defaults::WORKERS)
    }
    pub fn threads_per_worker(&self) -> u32 {
        self.threads_per_worker.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
            (cores / self.workers().max(1)).max(1)
        })
    }
    pub fn dynamics_pass(&self) -> &str {
        non_empty(&self.dynamics_pass).unwrap_or("train")
    }
    pub fn device(&self) -> &str {
        non_empty(&self.device).unwrap_or("cpu")
    }
    pub fn max_len(&self) -> u32 {
        self.max_len.unwrap_or(defaults::MAX_LEN)
    }
    /// The encoder layers fine-tuned (None: all of them).
    pub fn train_layers(&self) -> Option<u32> {
        self.train_layers
    }
    pub fn group_by_length(&self) -> bool {
        self.group_by_length.unwrap_or(false)
    }
    pub fn embed_dim(&self) -> u32 {
        self.embed_dim.unwrap_or(defaults::EMBED_DIM)
    }
    pub fn hash_bits(&self) -> u32 {
        self.hash_bits.unwrap_or(defaults::HASH_BITS)
    }
    pub fn record_dynamics(&self) -> bool {
        self.record_dynamics.unwrap_or(true)
    }
    pub fn save_model(&self) -> bool {
        self.save_model.unwrap_or(false)
    }
    pub fn threshold_samples(&self) -> bool {
        self.threshold_samples.unwrap_or(false)
    }
    /// The training runs: the map's, then with threshold samples two more.
    pub fn runs(&self) -> u32 {
        if self.threshold_samples() { 3 } else { 1 }
    }
    /// Epochs the job trains over all its runs (run r is epochs r·E .. (r+1)·E).
    pub fn epochs_total(&self) -> u32 {
        self.epochs().saturating_mul(self.runs())
    }
    /// `--suspect-epochs`, parsed (None: chosen by carto).
    pub fn suspect_epochs(&self) -> Result<Option<crate::epochs::EpochRange>> {
        non_empty(&self.suspect_epochs).map(|s| crate::epochs::EpochRange::parse(s, "suspect_epochs (--suspect-epochs)")).transpose()
    }

    /// Where the features come from; validated by [`JobSpec::validate`].
    pub fn feature_source(&self) -> Result<FeatureSource> {
        let text = non_empty(&self.text_col);
        let list = non_empty(&self.features_col);
        let cols = !self.feature_cols.is_empty();
        match (text, cols, list) {
            (Some(t), false, None) => Ok(FeatureSource::Text(t.to_string())),
            (None, true, None) => Ok(FeatureSource::Columns(self.feature_cols.clone())),
            (None, false, Some(l)) => Ok(FeatureSource::List(l.to_string())),
            (None, false, None) => Err(CartoError::invalid(
                "no features: give one of --text-col, --feature-cols or --features-col",
            )),
            _ => Err(CartoError::invalid(
                "give only one of --text-col, --feature-cols and --features-col",
            )),
        }
    }

    /// The held-out set, read with the training set's columns (no id).
    pub fn eval_dataset_spec(&self) -> Result<Option<DatasetSpec>> {
        let Some(path) = non_empty(&self.eval_data) else { return Ok(None) };
        Ok(Some(DatasetSpec { path: PathBuf::from(path), id_col: None, ..self.dataset_spec()? }))
    }

    pub fn dataset_spec(&self) -> Result<DatasetSpec> {
        let data = non_empty(&self.data)
            .ok_or_else(|| CartoError::invalid("data (--data) is required"))?;
        let label_col = non_empty(&self.label_col)
            .ok_or_else(|| CartoError::invalid("label_col (--label-col) is required"))?;
        Ok(DatasetSpec {
            path: PathBuf::from(data),
            label_col: label_col.to_string(),
            id_col: non_empty(&self.id_col).map(str::to_string),
            features: self.feature_source()?,
        })
    }

    /// Checks every field without touching the data. Messages name the field.
    pub fn validate(&self) -> Result<()> {
        match self.trainer.as_deref() {
            None | Some("carto") => {}
            Some(EXTERNAL) => return self.validate_external(),
            Some(t) => return Err(CartoError::invalid(format!("trainer must be carto or external, got '{t}'"))),
        }
        self.dataset_spec()?;
        if non_empty(&self.out).is_none() {
            return Err(CartoError::invalid("out (--out) is required"));
        }
        let model = self.model();
        if !MODELS.contains(&model) {
            return Err(CartoError::invalid(format!(
                "model (--model): unknown model '{model}', expected one of {}",
                MODELS.join(", ")
            )));
        }
        match (model, self.is_text()) {
            ("linear" | "mlp", true) => {
                return Err(CartoError::invalid(format!(
                    "model (--model) '{model}' needs numeric features (--feature-cols or --features-col), not --text-col"
                )))
            }
            ("bow" | "bert" | "roberta", false) => {
                return Err(CartoError::invalid(format!("model (--model) '{model}' needs --text-col")))
            }
            _ => {}
        }
        if matches!(model, "bert" | "roberta") && non_empty(&self.pretrained).is_none() {
            return Err(CartoError::invalid(format!(
                "model (--model) '{model}' needs --pretrained DIR (a save_pretrained directory)"
            )));
        }
        if !matches!(model, "bert" | "roberta") {
            if self.train_layers.is_some() {
                return Err(CartoError::invalid(format!(
                    "train_layers (--train-layers) applies to bert and roberta, not model '{model}'"
                )));
            }
            if self.group_by_length() {
                return Err(CartoError::invalid(format!(
                    "group_by_length (--group-by-length) applies to bert and roberta, not model '{model}'"
                )));
            }
        }
        let positive = [
            ("hidden (--hidden)", self.hidden()),
            ("epochs (--epochs)", self.epochs()),
            ("batch_size (--batch-size)", self.batch_size()),
            ("workers (--workers)", self.workers()),
            ("threads_per_worker (--threads-per-worker)", self.threads_per_worker()),
            ("max_len (--max-len)", self.max_len()),
            ("embed_dim (--embed-dim)", self.embed_dim()),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(CartoError::invalid(format!("{name} must be at least 1")));
            }
        }
        if !(1..=28).contains(&self.hash_bits()) {
            return Err(CartoError::invalid("hash_bits (--hash-bits) must be between 1 and 28"));
        }
        let lr = self.lr();
        if !lr.is_finite() || lr < 0.0 {
            return Err(CartoError::invalid(format!("lr (--lr) must be a finite number ≥ 0, got {lr}")));
        }
        if self.batch_size() % self.workers() != 0 {
            return Err(CartoError::invalid(format!(
                "batch_size (--batch-size) {} must be a multiple of workers (--workers) {}: the global batch is split evenly across ranks",
                self.batch_size(),
                self.workers()
            )));
        }
        if !matches!(self.dynamics_pass(), "train" | "eval") {
            return Err(CartoError::invalid(format!(
                "dynamics_pass (--dynamics-pass) must be train or eval, got '{}'",
                self.dynamics_pass()
            )));
        }
        DeviceSpec::parse(self.device())?;
        if let Some(r) = self.suspect_epochs()? {
            if r.start >= self.epochs() || r.end.is_some_and(|e| e > self.epochs()) {
                return Err(CartoError::invalid(format!(
                    "suspect_epochs (--suspect-epochs) {r} goes beyond the job's {} epochs (0..{})",
                    self.epochs(),
                    self.epochs()
                )));
            }
        }
        Ok(())
    }

    /// An external job: sizes given, the dataset (for ids, labels and text)
    /// optional, and nothing of carto's own training.
    fn validate_external(&self) -> Result<()> {
        if non_empty(&self.out).is_none() {
            return Err(CartoError::invalid("out is required"));
        }
        let n = self.num_samples.unwrap_or(0);
        if n == 0 {
            return Err(CartoError::invalid("num_samples is required for trainer = \"external\" (at least 1)"));
        }
        if n > MAX_EXTERNAL_SAMPLES {
            return Err(CartoError::invalid(format!("num_samples {n} is beyond the supported {MAX_EXTERNAL_SAMPLES}")));
        }
        let k = self.num_classes.unwrap_or(0);
        if !(2..=MAX_EXTERNAL_CLASSES).contains(&k) {
            return Err(CartoError::invalid(format!(
                "num_classes is required for trainer = \"external\" (2 to {MAX_EXTERNAL_CLASSES}), got {k}"
            )));
        }
        if !self.label_names.is_empty() && self.label_names.len() != k as usize {
            return Err(CartoError::invalid(format!(
                "label_names has {} names for num_classes {k}",
                self.label_names.len()
            )));
        }
        if self.workers() == 0 || self.workers() > 4096 {
            return Err(CartoError::invalid("world_size must be between 1 and 4096"));
        }
        if self.threshold_samples() {
            return Err(CartoError::invalid(
                "threshold_samples needs carto's own training runs; an external job's loop cannot be rerun",
            ));
        }
        Ok(())
    }

    /// The same spec with every default written out (what `job.json` records
    /// and what workers receive).
    pub fn with_defaults(&self) -> JobSpec {
        if self.is_external() {
            return JobSpec { world_size: Some(self.workers()), ..self.clone() };
        }
        JobSpec {
            model: Some(self.model().to_string()),
            hidden: Some(self.hidden()),
            epochs: Some(self.epochs()),
            batch_size: Some(self.batch_size()),
            lr: Some(self.lr()),
            seed: Some(self.seed()),
            workers: Some(self.workers()),
            threads_per_worker: Some(self.threads_per_worker()),
            dynamics_pass: Some(self.dynamics_pass().to_string()),
            device: Some(self.device().to_string()),
            max_len: Some(self.max_len()),
            embed_dim: Some(self.embed_dim()),
            hash_bits: Some(self.hash_bits()),
            record_dynamics: Some(self.record_dynamics()),
            save_model: Some(self.save_model()),
            group_by_length: Some(self.group_by_length()),
            threshold_samples: Some(self.threshold_samples()),
            ..self.clone()
        }
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<pb::JobSpec> for JobSpec {
    fn from(p: pb::JobSpec) -> Self {
        JobSpec {
            data: opt(p.data),
            label_col: opt(p.label_col),
            text_col: opt(p.text_col),
            feature_cols: p.feature_cols,
            features_col: opt(p.features_col),
            id_col: opt(p.id_col),
            model: opt(p.model),
            hidden: p.hidden,
            epochs: p.epochs,
            batch_size: p.batch_size,
            lr: p.lr,
            seed: p.seed,
            workers: p.workers,
            threads_per_worker: p.threads_per_worker,
            dynamics_pass: opt(p.dynamics_pass),
            device: opt(p.device),
            pretrained: opt(p.pretrained),
            max_len: p.max_len,
            out: opt(p.out),
            embed_dim: p.embed_dim,
            hash_bits: p.hash_bits,
            name: opt(p.name),
            record_dynamics: p.record_dynamics,
            save_model: p.save_model,
            train_layers: p.train_layers,
            group_by_length: p.group_by_length,
            threshold_samples: p.threshold_samples,
            suspect_epochs: opt(p.suspect_epochs),
            eval_data: opt(p.eval_data),
            trainer: opt(p.trainer),
            num_samples: p.num_samples,
            num_classes: p.num_classes,
            label_names: p.label_names,
            world_size: p.world_size,
        }
    }
}

impl From<JobSpec> for pb::JobSpec {
    fn from(s: JobSpec) -> Self {
        pb::JobSpec {
            data: s.data.unwrap_or_default(),
            label_col: s.label_col.unwrap_or_default(),
            text_col: s.text_col.unwrap_or_default(),
            feature_cols: s.feature_cols,
            features_col: s.features_col.unwrap_or_default(),
            id_col: s.id_col.unwrap_or_default(),
            model: s.model.unwrap_or_default(),
            hidden: s.hidden,
            epochs: s.epochs,
            batch_size: s.batch_size,
            lr: s.lr,
            seed: s.seed,
            workers: s.workers,
            threads_per_worker: s.threads_per_worker,
            dynamics_pass: s.dynamics_pass.unwrap_or_default(),
            device: s.device.unwrap_or_default(),
            pretrained: s.pretrained.unwrap_or_default(),
            max_len: s.max_len,
            out: s.out.unwrap_or_default(),
            embed_dim: s.embed_dim,
            hash_bits: s.hash_bits,
            name: s.name.unwrap_or_default(),
            record_dynamics: s.record_dynamics,
            save_model: s.save_model,
            train_layers: s.train_layers,
            group_by_length: s.group_by_length,
            threshold_samples: s.threshold_samples,
            suspect_epochs: s.suspect_epochs.unwrap_or_default(),
            eval_data: s.eval_data.unwrap_or_default(),
            trainer: s.trainer.unwrap_or_default(),
            num_samples: s.num_samples,
            num_classes: s.num_classes,
            label_names: s.label_names,
            world_size: s.world_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> JobSpec {
        JobSpec {
            data: Some("d.csv".into()),
            label_col: Some("label".into()),
            text_col: Some("text".into()),
            out: Some("out".into()),
            ..Default::default()
        }
    }

    #[test]
    fn devices_are_cpu_cuda_or_cuda_with_an_index() {
        assert_eq!(DeviceSpec::parse("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(None));
        assert_eq!(DeviceSpec::parse("cuda:0").unwrap(), DeviceSpec::Cuda(Some(0)));
        assert_eq!(DeviceSpec::parse("cuda:13").unwrap(), DeviceSpec::Cuda(Some(13)));
        for good in ["cpu", "cuda", "cuda:3"] {
            let s = JobSpec { device: Some(good.into()), ..base() };
            s.validate().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(s.device(), good);
        }
        for bad in ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda: 1", "cuda:1:2", "cuda0", "mps", "cpu:0"] {
            let err = JobSpec { device: Some(bad.into()), ..base() }.validate().unwrap_err().to_string();
            assert!(err.contains("device (--device)") && err.contains(&format!("'{bad}'")), "{bad}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn toml_uses_underscored_flag_names_and_rejects_unknown_fields() {
        let s = JobSpec::from_toml(
            "data = \"x.parquet\"\nlabel_col = \"y\"\nfeatures_col = \"pixels\"\nworkers = 2\nout = \"/shared/out\"\nlr = 0.0\n",
            "JOB.toml",
        )
        .unwrap();
        assert_eq!(s.features_col.as_deref(), Some("pixels"));
        assert_eq!(s.workers(), 2);
        assert_eq!(s.lr(), 0.0);
        assert_eq!(s.model(), "mlp");
        let err = JobSpec::from_toml("data = \"x\"\nepoch = 3\n", "JOB.toml").unwrap_err().to_string();
        assert!(err.starts_with("JOB.toml: ") && err.contains("epoch"), "{err}");
    }

    #[test]
    fn transformer_options_travel_over_the_wire() {
        let s = JobSpec {
            model: Some("bert".into()),
            pretrained: Some("ckpt".into()),
            train_layers: Some(0),
            group_by_length: Some(true),
            ..base()
        };
        s.validate().unwrap();
        let back = JobSpec::from(pb::JobSpec::from(s.clone()));
        assert_eq!(back, s);
        assert_eq!(back.train_layers(), Some(0), "0 (head only) is not 'unset'");
        assert!(back.group_by_length());
        assert_eq!(base().train_layers(), None);
        assert!(!base().with_defaults().group_by_length.unwrap());
    }

    #[test]
    fn defaults_depend_on_the_features() {
        let s = base();
        assert_eq!(s.model(), "bow");
        assert_eq!(s.lr(), defaults::lr("bow"));
        s.validate().unwrap();
        let full = s.with_defaults();
        assert_eq!(full.epochs, Some(defaults::EPOCHS));
        assert_eq!(full.model.as_deref(), Some("bow"));
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(JobSpec, &str)> = vec![
            (JobSpec { data: None, ..base() }, "--data"),
            (JobSpec { out: None, ..base() }, "--out"),
            (JobSpec { epochs: Some(0), ..base() }, "epochs"),
            (JobSpec { model: Some("mlp".into()), ..base() }, "numeric features"),
            (JobSpec { model: Some("cnn".into()), ..base() }, "unknown model 'cnn'"),
            (JobSpec { feature_cols: vec!["a".into()], ..base() }, "only one of"),
            (JobSpec { workers: Some(3), batch_size: Some(64), ..base() }, "multiple of workers"),
            (JobSpec { lr: Some(f64::NAN), ..base() }, "lr"),
            (JobSpec { dynamics_pass: Some("test".into()), ..base() }, "dynamics_pass"),
            (JobSpec { model: Some("roberta".into()), ..base() }, "--pretrained"),
            (JobSpec { train_layers: Some(0), ..base() }, "train_layers (--train-layers) applies to bert and roberta"),
            (JobSpec { group_by_length: Some(true), ..base() }, "group_by_length (--group-by-length) applies to bert"),
            (JobSpec { suspect_epochs: Some("3..9".into()), ..base() }, "suspect_epochs (--suspect-epochs) 3..9 goes beyond the job's 5 epochs"),
            (JobSpec { suspect_epochs: Some("2..1".into()), ..base() }, "suspect_epochs (--suspect-epochs) '2..1' selects no epoch"),
            (JobSpec { suspect_epochs: Some("x".into()), ..base() }, "suspect_epochs (--suspect-epochs) 'x': expected A..B"),
        ];
        for (spec, want) in cases {
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }

    #[test]
    fn threshold_samples_triple_the_epochs_and_need_carto_s_own_runs() {
        let s = JobSpec { threshold_samples: Some(true), epochs: Some(4), ..base() };
        assert_eq!((s.runs(), s.epochs_total()), (3, 12));
        assert_eq!(base().epochs_total(), 5);
        s.validate().unwrap();
        let back: JobSpec = pb::JobSpec::from(JobSpec { suspect_epochs: Some("1..3".into()), ..s.clone() }).into();
        assert!(back.threshold_samples());
        assert_eq!(back.suspect_epochs().unwrap().unwrap().to_string(), "1..3");
        let external = JobSpec {
            trainer: Some(EXTERNAL.into()),
            num_samples: Some(10),
            num_classes: Some(2),
            out: Some("o".into()),
            threshold_samples: Some(true),
            ..Default::default()
        };
        assert!(external.validate().unwrap_err().to_string().contains("threshold_samples needs carto's own training runs"));
    }

    #[test]
    fn wire_form_round_trips() {
        let s = JobSpec { feature_cols: vec!["a".into(), "b".into()], text_col: None, lr: Some(0.0), ..base() };
        let back: JobSpec = pb::JobSpec::from(s.clone()).into();
        assert_eq!(back, s);
    }
}
