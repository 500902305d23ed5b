//! The frozen layers' outputs, computed once per text (`--train-layers N`).
//!
//! With the embeddings and the first layers frozen (and run without dropout),
//! a text's state after them never changes, so the first epoch computes it
//! and later epochs read it back: an epoch then costs only the trainable
//! layers' forward and backward. Kept in host memory (float32, unpadded:
//! one vector per token, or one per text when only the head trains), within
//! a byte budget shared by the training and held-out sets
//! (`CARTO_FROZEN_CACHE_MB`, default 4096); texts past it recompute their
//! frozen part every epoch (no gradient), which is still cheaper than
//! training through it.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::{Tokens, Transformer};

/// The default budget of all caches of a worker, in MiB.
pub const DEFAULT_BUDGET_MB: usize = 4096;

/// Frozen states of the rows of one tokenized dataset.
struct Table {
    /// Per row: where its states start in `data` and how many vectors it has.
    slots: Vec<Option<(usize, usize)>>,
    data: Vec<f32>,
}

/// Every dataset's table, keyed by [`Tokens::id`], within one byte budget.
pub struct FrozenCache {
    tables: HashMap<u64, Table>,
    budget_bytes: usize,
    used_bytes: usize,
    full_logged: bool,
}

impl FrozenCache {
    pub fn new(budget_bytes: usize) -> FrozenCache {
        FrozenCache { tables: HashMap::new(), budget_bytes, used_bytes: 0, full_logged: false }
    }

    /// The budget from `CARTO_FROZEN_CACHE_MB` (MiB), or the default.
    pub fn from_env() -> FrozenCache {
        let mb = std::env::var("CARTO_FROZEN_CACHE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_BUDGET_MB);
        FrozenCache::new(mb << 20)
    }

    /// Bytes held.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// Rows of `tokens` held.
    pub fn cached_rows(&self, tokens: &Tokens) -> usize {
        self.tables.get(&tokens.id()).map_or(0, |t| t.slots.iter().flatten().count())
    }

    /// `(states, mask)` of `samples` for [`Transformer::forward_trainable`]:
    /// states `[b, width, hidden]` float32 and mask `[b, width]` int64 on
    /// `device`, computing (without gradient) and storing what is missing.
    pub fn batch(&mut self, t: &Transformer, tokens: &Tokens, samples: &[i64], device: Device) -> (Tensor, Tensor) {
        let hidden = t.hidden_size() as usize;
        let head_only = t.head_only();
        let table = self
            .tables
            .entry(tokens.id())
            .or_insert_with(|| Table { slots: vec![None; tokens.len()], data: Vec::new() });
        // Rows to compute now, in first-seen order (a batch may repeat a row).
        let mut missing: Vec<i64> = Vec::new();
        for &s in samples {
            if table.slots[s as usize].is_none() && !missing.contains(&s) {
                missing.push(s);
            }
        }
        // States computed for rows the budget cannot keep: this batch only.
        let mut transient: HashMap<i64, Vec<f32>> = HashMap::new();
        if !missing.is_empty() {
            let (ids, mask) = tokens.batch(&missing, device);
            let states = tch::no_grad(|| t.frozen_states(&ids, &mask)).to_device(Device::Cpu).contiguous();
            let width = states.size()[1] as usize;
            let mut flat = vec![0f32; states.numel()];
            let n = flat.len();
            states.copy_data(&mut flat, n);
            for (j, &s) in missing.iter().enumerate() {
                let rows = if head_only { 1 } else { tokens.row(s as usize).len() };
                let start = j * width * hidden;
                let values = &flat[start..start + rows * hidden];
                let bytes = values.len() * 4;
                if self.used_bytes + bytes <= self.budget_bytes {
                    table.slots[s as usize] = Some((table.data.len(), rows));
                    table.data.extend_from_slice(values);
                    self.used_bytes += bytes;
                } else {
                    if !self.full_logged {
                        tracing::info!(
                            budget_mb = self.budget_bytes >> 20,
                            "the frozen-layer cache is full (CARTO_FROZEN_CACHE_MB): further texts recompute their frozen layers every epoch"
                        );
                        self.full_logged = true;
                    }
                    transient.insert(s, values.to_vec());
                }
            }
        }
        let rows_of = |s: i64| -> &[f32] {
            match table.slots[s as usize] {
                Some((start, rows)) => &table.data[start..start + rows * hidden],
                None => &transient[&s],
            }
        };
        let width = samples.iter().map(|&s| rows_of(s).len() / hidden).max().unwrap_or(1).max(1);
        let mut x = vec![0f32; samples.len() * width * hidden];
        let mut m = vec![0i64; samples.len() * width];
        for (b, &s) in samples.iter().enumerate() {
            let values = rows_of(s);
            let rows = values.len() / hidden;
            x[b * width * hidden..b * width * hidden + values.len()].copy_from_slice(values);
            m[b * width..b * width + rows].fill(1);
        }
        let b = samples.len() as i64;
        (
            Tensor::from_slice(&x).view([b, width as i64, hidden as i64]).to_device(device),
            Tensor::from_slice(&m).view([b, width as i64]).to_kind(Kind::Int64).to_device(device),
        )
    }
}
