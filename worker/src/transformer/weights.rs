//! Copies a checkpoint's tensors into the network's variables, by name.
//!
//! Accepted layouts: a `*ForSequenceClassification` checkpoint (encoder and
//! head), a `*ForMaskedLM` or bare `*Model` one (encoder only, with or without
//! the `bert.` / `roberta.` prefix; the head starts fresh), old `gamma`/`beta`
//! LayerNorm names, half-precision tensors (converted to float32), and
//! sharded checkpoints (`model.safetensors.index.json`). Tensors the network
//! has no use for (a language-model head, buffers) are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{nn, Kind, Tensor};

use super::{Arch, Config, PretrainedError, Transformer};

/// The checkpoint files of `dir`.
fn files(dir: &Path) -> Result<Vec<PathBuf>, PretrainedError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| PretrainedError::file(&index, e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PretrainedError::file(&index, format!("not JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| PretrainedError::field(&index, "weight_map", "is missing"))?;
        let mut shards: Vec<PathBuf> = map.values().filter_map(|f| f.as_str()).map(|f| dir.join(f)).collect();
        shards.sort();
        shards.dedup();
        return Ok(shards);
    }
    let hint = if dir.join("pytorch_model.bin").exists() {
        " (pytorch_model.bin is not read: save with save_pretrained(..., safe_serialization=True))"
    } else {
        ""
    };
    Err(PretrainedError::file(&single, format!("not found{hint}")))
}

/// The network's name for a checkpoint tensor.
fn canonical(arch: Arch, name: &str) -> String {
    let name = name.strip_suffix(".gamma").map(|n| format!("{n}.weight")).unwrap_or_else(|| name.to_string());
    let name = name.strip_suffix(".beta").map(|n| format!("{n}.bias")).unwrap_or(name);
    let prefix = format!("{}.", arch.name());
    if name.starts_with(&prefix) || name.starts_with("classifier.") {
        name
    } else {
        format!("{prefix}{name}")
    }
}

/// Loads `dir`'s checkpoint into `vs` (built by [`Transformer::new`] for
/// `cfg`). Returns the names of head variables the checkpoint lacks, which
/// keep their fresh initialisation.
pub fn load(vs: &nn::VarStore, dir: &Path, cfg: &Config) -> Result<Vec<String>, PretrainedError> {
    let mut found: HashMap<String, (Tensor, PathBuf)> = HashMap::new();
    for file in files(dir)? {
        let tensors = Tensor::read_safetensors(&file)
            .map_err(|e| PretrainedError::file(&file, format!("not a readable safetensors file: {e}")))?;
        for (name, t) in tensors {
            found.insert(canonical(cfg.arch, &name), (t, file.clone()));
        }
    }
    let mut fresh = Vec::new();
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| {
        for name in names {
            let var = &vars[name];
            let Some((t, file)) = found.get(name.as_str()) else {
                if Transformer::is_head(cfg.arch, name) {
                    fresh.push(name.clone());
                    continue;
                }
                let file = dir.join("model.safetensors");
                return Err(PretrainedError::tensor(&file, name, "is missing from the checkpoint"));
            };
            if t.size() != var.size() {
                // The output layer: classifier.* (BERT) or classifier.out_proj.* (RoBERTa).
                let output_layer = name.starts_with("classifier.") && !name.starts_with("classifier.dense.");
                let msg = if output_layer {
                    format!(
                        "the head classifies {} classes, the dataset has {} (remove the head's tensors to start a fresh head)",
                        t.size()[0],
                        var.size()[0]
                    )
                } else {
                    format!("has shape {:?}, config.json implies {:?}", t.size(), var.size())
                };
                return Err(PretrainedError::tensor(file, name, msg));
            }
            if !t.is_floating_point() {
                return Err(PretrainedError::tensor(file, name, format!("has kind {:?}, expected floating point", t.kind())));
            }
            let mut var = var.shallow_clone();
            var.copy_(&t.to_kind(Kind::Float).to_device(var.device()));
        }
        Ok(())
    })?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_classifiers_layout() {
        assert_eq!(canonical(Arch::Roberta, "encoder.layer.0.output.dense.weight"), "roberta.encoder.layer.0.output.dense.weight");
        assert_eq!(canonical(Arch::Roberta, "roberta.embeddings.LayerNorm.weight"), "roberta.embeddings.LayerNorm.weight");
        assert_eq!(canonical(Arch::Bert, "bert.embeddings.LayerNorm.gamma"), "bert.embeddings.LayerNorm.weight");
        assert_eq!(canonical(Arch::Bert, "classifier.bias"), "classifier.bias");
    }
}
