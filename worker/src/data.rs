//! The dataset as the model sees it: standardised dense features on the
//! device, or hashed n-grams for `bow`, plus the labels.

use carto_common::dataset::{Dataset, Features};
use tch::{Device, Kind, Tensor};

use crate::text::{self, HashedText};

pub enum Inputs {
    /// `[n, dim]` float32 on the training device, standardised.
    Dense(Tensor),
    /// Hashed unigrams and bigrams per row (CPU; gathered per batch).
    Text(HashedText),
}

pub struct TrainData {
    pub inputs: Inputs,
    /// `[n]` int64 on the device.
    pub labels: Tensor,
    pub labels_cpu: Vec<i64>,
    pub num_classes: usize,
    pub input_dim: usize,
}

/// Per-feature mean and standard deviation over all rows, in f64. A constant
/// feature gets std 1 so it maps to 0 instead of NaN.
pub fn standardise(values: &mut [f32], dim: usize) {
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
    let std: Vec<f64> = m2
        .iter()
        .map(|&s| {
            let sd = (s / n.max(1) as f64).sqrt();
            if sd > 1e-12 { sd } else { 1.0 }
        })
        .collect();
    for row in values.chunks_exact_mut(dim) {
        for (j, x) in row.iter_mut().enumerate() {
            *x = ((*x as f64 - mean[j]) / std[j]) as f32;
        }
    }
}

impl TrainData {
    pub fn new(ds: Dataset, hash_bits: u32, device: Device) -> TrainData {
        let labels = Tensor::from_slice(&ds.labels).to_device(device);
        let (inputs, input_dim) = match ds.features {
            Features::Dense { dim, mut values } => {
                standardise(&mut values, dim);
                let x = Tensor::from_slice(&values)
                    .view([ds.labels.len() as i64, dim as i64])
                    .to_kind(Kind::Float)
                    .to_device(device);
                (Inputs::Dense(x), dim)
            }
            Features::Text(texts) => (Inputs::Text(text::hash_texts(&texts, hash_bits)), 1 << hash_bits),
        };
        TrainData { inputs, labels, labels_cpu: ds.labels, num_classes: ds.num_classes, input_dim }
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
        standardise(&mut v, 2);
        let col0 = [v[0], v[2], v[4]];
        let mean: f32 = col0.iter().sum::<f32>() / 3.0;
        let var: f32 = col0.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
        assert_eq!([v[1], v[3], v[5]], [0.0, 0.0, 0.0]);
    }
}
