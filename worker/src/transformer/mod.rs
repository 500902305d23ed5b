//! BERT and RoBERTa sequence classifiers from a Hugging Face `save_pretrained`
//! directory: `config.json` (the architecture), `model.safetensors` (the
//! weights; sharded checkpoints through `model.safetensors.index.json`) and
//! `tokenizer.json` (the tokenizer). Nothing is downloaded.
//!
//! - [`config`]: reads and checks `config.json`.
//! - [`tokenize`]: texts → token ids, batches with dynamic padding and masks.
//! - [`encoder`]: the network, written with `tch::nn` under transformers'
//!   parameter names, so its weights load by name (and carto's
//!   `model.safetensors` loads back into transformers).
//! - [`weights`]: loads the checkpoint into the network, checking every shape.
//! - [`cache`]: the frozen layers' outputs per text (`--train-layers`).

pub mod cache;
pub mod config;
pub mod encoder;
pub mod tokenize;
pub mod weights;

use std::path::{Path, PathBuf};

pub use config::{Arch, Config};
pub use cache::FrozenCache;
pub use encoder::Transformer;
pub use tokenize::{SubwordTokenizer, Tokens};

use crate::WorkerError;

/// What is wrong with a pretrained directory: one line naming the file, and
/// the field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{path}: field '{field}': {msg}")]
    Field { path: PathBuf, field: String, msg: String },
    #[error("{path}: tensor '{name}': {msg}")]
    Tensor { path: PathBuf, name: String, msg: String },
}

impl PretrainedError {
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        PretrainedError::File { path: path.to_path_buf(), msg: msg.into() }
    }
    pub fn field(path: &Path, field: &str, msg: impl Into<String>) -> Self {
        PretrainedError::Field { path: path.to_path_buf(), field: field.to_string(), msg: msg.into() }
    }
    pub fn tensor(path: &Path, name: &str, msg: impl Into<String>) -> Self {
        PretrainedError::Tensor { path: path.to_path_buf(), name: name.to_string(), msg: msg.into() }
    }
}

impl From<PretrainedError> for WorkerError {
    fn from(e: PretrainedError) -> Self {
        WorkerError::Invalid(e.to_string())
    }
}

/// A checked pretrained directory: its configuration and tokenizer (the
/// weights are read when the model is built).
pub struct Pretrained {
    pub dir: PathBuf,
    pub config: Config,
    pub tokenizer: SubwordTokenizer,
}

impl Pretrained {
    /// Reads `DIR/config.json` (which must describe `arch`) and
    /// `DIR/tokenizer.json` (truncating at `max_len` tokens, special ones
    /// included).
    pub fn open(dir: &Path, arch: Arch, max_len: usize) -> Result<Pretrained, PretrainedError> {
        if !dir.is_dir() {
            return Err(PretrainedError::file(dir, "--pretrained is not a directory"));
        }
        let config = Config::read(&dir.join("config.json"), arch)?;
        let limit = config.max_tokens();
        if max_len > limit {
            return Err(PretrainedError::field(
                &dir.join("config.json"),
                "max_position_embeddings",
                format!("the model takes at most {limit} tokens per text, lower --max-len (given {max_len})"),
            ));
        }
        let tokenizer = SubwordTokenizer::open(&dir.join("tokenizer.json"), max_len, &config)?;
        Ok(Pretrained { dir: dir.to_path_buf(), config, tokenizer })
    }
}
