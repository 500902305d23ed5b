//! The dataset as the model sees it: standardised dense features on the
//! device, hashed n-grams for `bow` or a checkpoint's subword tokens for
//! `bert` / `roberta`, plus the labels. A held-out set
//! (`--eval-data`) is prepared with the *training* set's statistics and
//! class names.

use std::sync::Arc;

use carto_common::dataset::{Dataset, Features};
use tch::{Device, Kind, Tensor};

use crate::text::{self, HashedText};
use crate::transformer::{Pretrained, Tokens};
use crate::WorkerError;

pub enum Inputs {
    /// `[n, dim]` float32 on the training device, standardised.
    Dense(Tensor),
    /// Hashed unigrams and bigrams per row (CPU; gathered per batch).
    Text(HashedText),
    /// Subword token ids per row (CPU; padded per batch).
    Tokens(Tokens),
}

/// How text becomes model input.
#[derive(Clone)]
pub enum TextEncoder {
    /// `bow`: unigrams and bigrams hashed into 2^bits buckets.
    Hashed(u32),
    /// `bert` / `roberta`: the checkpoint's tokenizer (the model is built from the same checkpoint).
    Pretrained(Arc<Pretrained>),
}

impl TextEncoder {
    fn encode(&self, texts: &[String], file: &str) -> Result<Inputs, WorkerError> {
        Ok(match self {
            TextEncoder::Hashed(bits) => Inputs::Text(text::hash_texts(texts, *bits)),
            TextEncoder::Pretrained(p) => Inputs::Tokens(p.tokenizer.encode(texts, file)?),
        })
    }

    fn input_dim(&self) -> usize {
        match self {
            TextEncoder::Hashed(bits) => 1 << bits,
            TextEncoder::Pretrained(p) => p.config.vocab_size as usize,
        }
    }
}

/// Per-feature mean and standard deviation, fitted on the training rows in
/// f64. A constant feature gets std 1 so it maps to 0 instead of NaN.
#[derive(Debug, Clone)]
pub struct Standardizer {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Standardizer {
    pub fn fit(values: &[f32], dim: usize) -> Self {
        let n = values.len() / dim;
        let mut mean = vec![0f64; dim];
        let mut m2 = vec![0f64; dim];
        for (i, row) in values.chunks_exact(dim).enumerate() {
            for (j, &x) in row.iter().enumerate() {
                let d = x as f64 - mean[j];
                mean[j] += d / (i + 1) as f64;
                m2[j] += d * (x as f64 - mean[j]);
            }
        }
        let std = m2
            .iter()
            .map(|&s| {
                let sd = (s / n.max(1) as f64).sqrt();
                if sd > 1e-12 { sd } else { 1.0 }
            })
            .collect();
        Standardizer { mean, std }
    }

    pub fn apply(&self, values: &mut [f32]) {
        let dim = self.mean.len();
        for row in values.chunks_exact_mut(dim) {
            for (j, x) in row.iter_mut().enumerate() {
                *x = ((*x as f64 - self.mean[j]) / self.std[j]) as f32;
            }
        }
    }
}

pub struct TrainData {
    pub inputs: Inputs,
    /// `[n]` int64 on the device.
    pub labels: Tensor,
    pub labels_cpu: Vec<i64>,
    pub num_classes: usize,
    pub input_dim: usize,
    /// Fitted on this (training) set; applied to held-out sets.
    standardizer: Option<Standardizer>,
    label_names: Option<Vec<String>>,
    encoder: TextEncoder,
    device: Device,
}

fn dense_tensor(values: &[f32], rows: usize, dim: usize, device: Device) -> Tensor {
    Tensor::from_slice(values).view([rows as i64, dim as i64]).to_kind(Kind::Float).to_device(device)
}

impl TrainData {
    /// Numbers, or text hashed for `bow`.
    pub fn new(ds: Dataset, hash_bits: u32, device: Device) -> TrainData {
        Self::encoded(ds, TextEncoder::Hashed(hash_bits), device).expect("hashing text cannot fail")
    }

    pub fn encoded(ds: Dataset, encoder: TextEncoder, device: Device) -> Result<TrainData, WorkerError> {
        let labels = Tensor::from_slice(&ds.labels).to_device(device);
        let rows = ds.labels.len();
        let file = ds.path.display().to_string();
        let (inputs, input_dim, standardizer) = match ds.features {
            Features::Dense { dim, mut values } => {
                let s = Standardizer::fit(&values, dim);
                s.apply(&mut values);
                (Inputs::Dense(dense_tensor(&values, rows, dim, device)), dim, Some(s))
            }
            Features::Text(texts) => (encoder.encode(&texts, &file)?, encoder.input_dim(), None),
        };
        Ok(TrainData {
            inputs,
            labels,
            labels_cpu: ds.labels,
            num_classes: ds.num_classes,
            input_dim,
            standardizer,
            label_names: ds.label_names,
            encoder,
            device,
        })
    }

    /// The checkpoint whose tokenizer encoded the text, if any.
    pub fn pretrained(&self) -> Option<&Pretrained> {
        match &self.encoder {
            TextEncoder::Pretrained(p) => Some(p),
            TextEncoder::Hashed(_) => None,
        }
    }

    /// A held-out set in this set's terms: the same standardisation and the
    /// same class indices (string labels are matched by name).
    pub fn held_out(&self, ds: Dataset) -> Result<TrainData, WorkerError> {
        let file = ds.path.display().to_string();
        let labels: Vec<i64> = match (&self.label_names, &ds.label_names) {
            (Some(train), Some(eval)) => ds
                .labels
                .iter()
                .enumerate()
                .map(|(row, &l)| {
                    let name = &eval[l as usize];
                    train.iter().position(|t| t == name).map(|i| i as i64).ok_or_else(|| {
                        WorkerError::Invalid(format!(
                            "{file}: row {row}: label '{name}' does not occur in the training data"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            (None, None) => {
                if let Some(row) = ds.labels.iter().position(|&l| l as usize >= self.num_classes) {
                    return Err(WorkerError::Invalid(format!(
                        "{file}: row {row}: label {} is not one of the training data's {} classes",
                        ds.labels[row], self.num_classes
                    )));
                }
                ds.labels.clone()
            }
            _ => {
                return Err(WorkerError::Invalid(format!(
                    "{file}: labels are {} but the training data's are {}",
                    if ds.label_names.is_some() { "strings" } else { "integers" },
                    if self.label_names.is_some() { "strings" } else { "integers" }
                )))
            }
        };
        let rows = labels.len();
        let inputs = match (ds.features, &self.standardizer) {
            (Features::Dense { dim, mut values }, Some(s)) if dim == self.input_dim => {
                s.apply(&mut values);
                Inputs::Dense(dense_tensor(&values, rows, dim, self.device))
            }
            (Features::Dense { dim, .. }, _) => {
                return Err(WorkerError::Invalid(format!(
                    "{file}: {dim} features per row, the training data has {}",
                    self.input_dim
                )))
            }
            (Features::Text(texts), None) => self.encoder.encode(&texts, &file)?,
            (Features::Text(_), Some(_)) => {
                return Err(WorkerError::Invalid(format!("{file}: text features, the training data is numeric")))
            }
        };
        Ok(TrainData {
            inputs,
            labels: Tensor::from_slice(&labels).to_device(self.device),
            labels_cpu: labels,
            num_classes: self.num_classes,
            input_dim: self.input_dim,
            standardizer: self.standardizer.clone(),
            label_names: self.label_names.clone(),
            encoder: self.encoder.clone(),
            device: self.device,
        })
    }

    pub fn len(&self) -> usize {
        self.labels_cpu.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels_cpu.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_columns_have_zero_mean_unit_std_and_constants_become_zero() {
        let mut v = vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0]; // rows: (1,5) (3,5) (5,5)
        let s = Standardizer::fit(&v, 2);
        s.apply(&mut v);
        let col0 = [v[0], v[2], v[4]];
        let mean: f32 = col0.iter().sum::<f32>() / 3.0;
        let var: f32 = col0.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        assert_eq!([v[1], v[3], v[5]], [0.0, 0.0, 0.0]);
        // Held-out rows use the training statistics, not their own.
        let mut held = vec![3.0, 9.0];
        s.apply(&mut held);
        assert_eq!(held, vec![0.0, 4.0]);
    }
}
