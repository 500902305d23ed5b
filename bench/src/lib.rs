//! Shared pieces of the benchmark tools.

use carto_common::dynamics::DynamicsColumns;
use carto_common::metrics::RowStats;

/// SplitMix64: deterministic pseudo-random numbers for synthetic data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The label of synthetic sample `s`.
pub fn label_of(s: u64, classes: u32) -> i64 {
    (s.wrapping_mul(0x9E37_79B9) % classes as u64) as i64
}

/// Dynamics rows for `samples` at `epoch`: logits drift towards the gold
/// class with the epoch, with per-sample noise, so metrics spread out.
pub fn synthetic_rows(samples: &[u64], epoch: u32, classes: u32, seed: u64) -> DynamicsColumns {
    let mut cols = DynamicsColumns::with_capacity(samples.len());
    let mut z = vec![0f64; classes as usize];
    for &s in samples {
        let mut rng = Rng(seed ^ s.wrapping_mul(0xA24B_AED4_963E_E407) ^ (epoch as u64) << 40);
        let label = label_of(s, classes);
        let difficulty = (s % 97) as f64 / 97.0;
        for (k, v) in z.iter_mut().enumerate() {
            *v = rng.unit() * 2.0 - 1.0;
            if k as i64 == label {
                *v += (epoch as f64 + 1.0) * (1.2 - 1.5 * difficulty);
            }
        }
        cols.push(s as i64, label, &RowStats::from_logits(&z, label as usize));
    }
    cols
}
