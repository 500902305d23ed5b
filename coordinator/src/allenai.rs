//! `carto import-allenai DIR`: metrics from the training dynamics written by
//! the paper's code (allenai/cartography): `dynamics_epoch_K.jsonl`, one JSON
//! object per line, `{"guid": …, "logits_epoch_K": [..], "gold": k}`.
//! Samples are numbered in the order of the first epoch file; `id` keeps the guid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use carto_common::metrics::{RowStats, SampleAccumulators};
use carto_common::{CartoError, Result};

use crate::outputs::SampleInfo;
use crate::recompute::{EpochRange, Recomputed};

/// The `dynamics_epoch_K.jsonl` files in `dir` (or in `dir/training_dynamics`,
/// where the paper's code writes them), sorted by K.
pub fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let scan = |d: &Path| -> Vec<(u32, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(d) else { return vec![] };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let k = name.strip_prefix("dynamics_epoch_")?.strip_suffix(".jsonl")?.parse().ok()?;
                Some((k, e.path()))
            })
            .collect()
    };
    if !dir.is_dir() {
        return Err(CartoError::invalid(format!("{}: no such directory", dir.display())));
    }
    let mut files = scan(dir);
    if files.is_empty() {
        files = scan(&dir.join("training_dynamics"));
    }
    if files.is_empty() {
        return Err(CartoError::invalid(format!(
            "{}: no dynamics_epoch_K.jsonl files (nor in its training_dynamics/)",
            dir.display()
        )));
    }
    files.sort_by_key(|(k, _)| *k);
    Ok(files)
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Guid {
    Int(i64),
    Text(String),
}

fn guid_of(v: &serde_json::Value) -> Option<Guid> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().map(Guid::Int).or_else(|| Some(Guid::Text(n.to_string()))),
        serde_json::Value::String(s) => Some(Guid::Text(s.clone())),
        _ => None,
    }
}

/// Reads the selected epochs and folds them into per-sample accumulators.
pub fn import(dir: &Path, range: EpochRange) -> Result<Recomputed> {
    let files: Vec<(u32, PathBuf)> = list_files(dir)?.into_iter().filter(|(k, _)| range.contains(*k)).collect();
    if files.is_empty() {
        return Err(CartoError::invalid(format!("--epochs selects none of the epoch files in {}", dir.display())));
    }
    let mut index: HashMap<Guid, usize> = HashMap::new();
    let mut guids: Vec<Guid> = Vec::new();
    let mut golds: Vec<i64> = Vec::new();
    let mut classes: Option<usize> = None;
    let mut acc = SampleAccumulators::new(0);
    for (fi, (epoch, path)) in files.iter().enumerate() {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CartoError::io(path, e))?;
        let key = format!("logits_epoch_{epoch}");
        let mut seen_here = 0usize;
        for (ln, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = |msg: String| CartoError::invalid(format!("{what}: line {}: {msg}", ln + 1));
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
            let guid = v.get("guid").and_then(guid_of).ok_or_else(|| at("field 'guid' is missing or not a number/string".into()))?;
            let gold = v.get("gold").and_then(|g| g.as_i64()).ok_or_else(|| at("field 'gold' is missing or not an integer".into()))?;
            let logits = v
                .get(&key)
                .or_else(|| v.get("logits"))
                .and_then(|l| l.as_array())
                .ok_or_else(|| at(format!("field '{key}' is missing or not a list")))?;
            let z: Vec<f64> = logits
                .iter()
                .map(|x| x.as_f64().filter(|f| f.is_finite()))
                .collect::<Option<_>>()
                .ok_or_else(|| at(format!("field '{key}' holds a non-number or non-finite value")))?;
            let c = *classes.get_or_insert(z.len());
            if z.len() != c || c < 2 {
                return Err(at(format!("{} logits, expected {c} (at least 2)", z.len())));
            }
            if gold < 0 || gold as usize >= c {
                return Err(at(format!("gold {gold} is not a class index below {c}")));
            }
            let s = match index.get(&guid) {
                Some(&s) => s,
                None if fi == 0 => {
                    index.insert(guid.clone(), guids.len());
                    guids.push(guid);
                    golds.push(gold);
                    acc.grow(guids.len());
                    guids.len() - 1
                }
                None => return Err(at("guid not present in the first selected epoch file".into())),
            };
            if golds[s] != gold {
                return Err(at(format!("gold {gold} differs from {} in an earlier epoch", golds[s])));
            }
            let r = RowStats::from_logits(&z, gold as usize);
            acc.observe(s, *epoch, r.gold_prob, r.correct, r.margin, r.el2n)
                .map_err(|_| at("guid appears twice in this epoch".into()))?;
            seen_here += 1;
        }
        if seen_here != guids.len() {
            return Err(CartoError::invalid(format!(
                "{what}: {seen_here} samples, but the first epoch file has {}",
                guids.len()
            )));
        }
    }
    let ids: ArrayRef = if guids.iter().all(|g| matches!(g, Guid::Int(_))) {
        Arc::new(Int64Array::from_iter_values(guids.iter().map(|g| match g {
            Guid::Int(i) => *i,
            Guid::Text(_) => unreachable!(),
        })))
    } else {
        Arc::new(StringArray::from_iter_values(guids.iter().map(|g| match g {
            Guid::Int(i) => i.to_string(),
            Guid::Text(t) => t.clone(),
        })))
    };
    Ok(Recomputed {
        acc,
        info: SampleInfo { labels: golds, label_names: None, ids: Some(ids) },
        epochs: files.iter().map(|(k, _)| *k).collect(),
    })
}
