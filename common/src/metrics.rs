//! The metric formulas of Dataset Cartography, in one place.
//!
//! [`RowStats::from_logits`] turns one sample's logits at one epoch into the raw
//! dynamics (gold_prob, pred, correct, margin, el2n, loss). [`SampleAccumulators`]
//! folds those epoch by epoch into per-sample running state — memory
//! O(samples), never samples × epochs — and [`SampleAccumulators::finish`]
//! yields the per-sample metrics of `metrics.parquet`:
//!
//! | column | formula over the recorded epochs e |
//! |---|---|
//! | confidence | mean_e p_e |
//! | variability | population std of p_e (ddof = 0) |
//! | correctness | (#epochs correct) / (#epochs) |
//! | correct_count | #epochs correct |
//! | forgetting_events | #(correct at e−1 and wrong at e) |
//! | first_learned_epoch | first e with correct, null if never |
//! | aum | mean_e margin_e |
//! | el2n | mean_e ‖p_e − onehot(gold)‖₂ |
//! | threshold_closeness | confidence · (1 − confidence) |

use crate::{CartoError, Result};

/// One sample's dynamics at one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// softmax(z)[gold]
    pub gold_prob: f64,
    /// argmax z, ties to the lowest index
    pub pred: i64,
    pub correct: bool,
    /// z[gold] − max_{k≠gold} z[k]
    pub margin: f64,
    /// ‖softmax(z) − onehot(gold)‖₂
    pub el2n: f64,
    /// −log softmax(z)[gold]
    pub loss: f64,
}

impl RowStats {
    /// Computes the dynamics of one row of logits, in f64 with a max-shifted,
    /// overflow-free softmax. `gold` must index `logits`; at least 2 classes.
    pub fn from_logits<T: Copy + Into<f64>>(logits: &[T], gold: usize) -> RowStats {
        debug_assert!(logits.len() >= 2 && gold < logits.len());
        let mut pred = 0usize;
        let mut max = f64::NEG_INFINITY;
        let mut max_other = f64::NEG_INFINITY;
        for (k, &z) in logits.iter().enumerate() {
            let z: f64 = z.into();
            // Strict `>`: the first maximum wins, like numpy.argmax.
            if z > max || k == 0 {
                max = z;
                pred = k;
            }
            if k != gold && z > max_other {
                max_other = z;
            }
        }
        let mut sum = 0.0f64;
        for &z in logits {
            sum += (z.into() - max).exp();
        }
        let z_gold: f64 = logits[gold].into();
        let log_sum = sum.ln();
        let log_p_gold = z_gold - max - log_sum;
        let gold_prob = log_p_gold.exp();
        let mut sq = 0.0f64;
        for (k, &z) in logits.iter().enumerate() {
            let p = (z.into() - max).exp() / sum;
            let d = if k == gold { p - 1.0 } else { p };
            sq += d * d;
        }
        RowStats {
            gold_prob,
            pred: pred as i64,
            correct: pred == gold,
            margin: z_gold - max_other,
            el2n: sq.sqrt(),
            loss: -log_p_gold,
        }
    }
}

/// Sentinel for "never learned" and "no epoch yet".
const NONE: u16 = u16::MAX;

/// One sample's running state: 40 bytes (one cache line holds it), so a
/// row folded in at a random sample touches one line, not ten arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Slot {
    /// Welford running mean of gold_prob.
    mean_p: f64,
    /// Welford running sum of squared deviations of gold_prob.
    m2_p: f64,
    sum_margin: f64,
    /// ‖p − onehot‖₂ ≤ √2: f32 keeps its sum to ~1e-7.
    sum_el2n: f32,
    /// Epochs observed.
    epochs: u16,
    /// The last epoch observed, to enforce increasing order (NONE: none yet).
    last_epoch: u16,
    correct_count: u16,
    forgetting: u16,
    /// The first epoch predicted correctly (NONE: never).
    first_learned: u16,
    last_correct: bool,
}

const EMPTY: Slot = Slot {
    mean_p: 0.0,
    m2_p: 0.0,
    sum_margin: 0.0,
    sum_el2n: 0.0,
    epochs: 0,
    last_epoch: NONE,
    correct_count: 0,
    forgetting: 0,
    first_learned: NONE,
    last_correct: false,
};

/// The most epochs a sample can be observed in (counters are 16-bit).
pub const MAX_EPOCHS: u32 = NONE as u32 - 1;

/// Running per-sample state, one 40-byte slot per sample. Epochs must be
/// observed in increasing order for each sample; each (sample, epoch) once.
#[derive(Debug, Clone)]
pub struct SampleAccumulators {
    slots: Vec<Slot>,
}

/// Final metrics of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleMetrics {
    pub epochs: u32,
    pub confidence: f64,
    pub variability: f64,
    pub correctness: f64,
    pub aum: f64,
    pub el2n: f64,
    pub threshold_closeness: f64,
    pub correct_count: u32,
    pub forgetting_events: u32,
    pub first_learned_epoch: Option<i32>,
}

impl SampleAccumulators {
    /// Bytes of running state per sample.
    pub const BYTES_PER_SAMPLE: usize = std::mem::size_of::<Slot>();

    pub fn new(num_samples: usize) -> Self {
        let mut acc = SampleAccumulators { slots: Vec::new() };
        acc.grow(num_samples);
        acc
    }

    /// Reserves room for `num_samples` slots (in huge pages where offered)
    /// without observing them: callers that know the dataset's size ahead
    /// avoid regrowing an 80 MB table.
    pub fn reserve(&mut self, num_samples: usize) {
        crate::memory::reserve_huge(&mut self.slots, num_samples);
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Extends to `num_samples` slots (new samples start unobserved).
    pub fn grow(&mut self, num_samples: usize) {
        if num_samples > self.len() {
            if num_samples > self.slots.capacity() {
                // Amortised doubling, as Vec would, but advised huge pages.
                self.reserve(num_samples.max(2 * self.slots.capacity()));
            }
            self.slots.resize(num_samples, EMPTY);
        }
    }

    /// Epochs observed for `sample`.
    pub fn epochs(&self, sample: usize) -> u32 {
        self.slots[sample].epochs as u32
    }

    /// Folds one (sample, epoch) observation in.
    #[inline]
    pub fn observe(
        &mut self,
        sample: usize,
        epoch: u32,
        gold_prob: f64,
        correct: bool,
        margin: f64,
        el2n: f64,
    ) -> Result<()> {
        let len = self.len();
        let Some(slot) = self.slots.get_mut(sample) else {
            return Err(CartoError::invalid(format!(
                "sample_id {sample} is out of range (dataset has {len} samples)"
            )));
        };
        if epoch > MAX_EPOCHS {
            return Err(CartoError::invalid(format!("epoch {epoch} is beyond the supported {MAX_EPOCHS}")));
        }
        if slot.last_epoch != NONE && epoch <= slot.last_epoch as u32 {
            return Err(CartoError::invalid(format!(
                "sample_id {sample}: epoch {epoch} observed after epoch {} (duplicate or out of order)",
                slot.last_epoch
            )));
        }
        // Read-modify-write `epochs` before storing `last_epoch` beside it: the
        // other order makes the compiler reload both as one 32-bit word right
        // after a 16-bit store, a store-forwarding stall (perf: 20% of a fold).
        slot.epochs += 1;
        slot.last_epoch = epoch as u16;
        let delta = gold_prob - slot.mean_p;
        slot.mean_p += delta / slot.epochs as f64;
        slot.m2_p += delta * (gold_prob - slot.mean_p);
        slot.sum_margin += margin;
        slot.sum_el2n += el2n as f32;
        if correct {
            slot.correct_count += 1;
            if slot.first_learned == NONE {
                slot.first_learned = epoch as u16;
            }
        } else if slot.last_correct {
            slot.forgetting += 1;
        }
        slot.last_correct = correct;
        Ok(())
    }

    /// Metrics of one sample; `None` when it was never observed.
    pub fn metrics(&self, sample: usize) -> Option<SampleMetrics> {
        let slot = &self.slots[sample];
        if slot.epochs == 0 {
            return None;
        }
        let nf = slot.epochs as f64;
        let confidence = slot.mean_p;
        // Clamp: Welford's m2 can dip a hair below 0 in floating point.
        let variability = (slot.m2_p / nf).max(0.0).sqrt();
        Some(SampleMetrics {
            epochs: slot.epochs as u32,
            confidence,
            variability,
            correctness: slot.correct_count as f64 / nf,
            aum: slot.sum_margin / nf,
            el2n: slot.sum_el2n as f64 / nf,
            threshold_closeness: confidence * (1.0 - confidence),
            correct_count: slot.correct_count as u32,
            forgetting_events: slot.forgetting as u32,
            first_learned_epoch: (slot.first_learned != NONE).then_some(slot.first_learned as i32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn row_stats_match_hand_computed_values() {
        // z = [1, 2, 0], gold = 0: softmax = e^z / (e + e^2 + 1)
        let s = RowStats::from_logits(&[1.0f32, 2.0, 0.0], 0);
        let (e1, e2, e0) = (1f64.exp(), 2f64.exp(), 1.0);
        let sum = e1 + e2 + e0;
        let p = [e1 / sum, e2 / sum, e0 / sum];
        assert!(close(s.gold_prob, p[0]));
        assert_eq!(s.pred, 1);
        assert!(!s.correct);
        assert!(close(s.margin, 1.0 - 2.0));
        let el2n = ((p[0] - 1.0).powi(2) + p[1].powi(2) + p[2].powi(2)).sqrt();
        assert!(close(s.el2n, el2n));
        assert!(close(s.loss, -p[0].ln()));
    }

    #[test]
    fn argmax_ties_go_to_the_lowest_index() {
        let s = RowStats::from_logits(&[0.5f64, 3.0, 3.0, 3.0], 2);
        assert_eq!(s.pred, 1);
        assert!(!s.correct);
        assert!(close(s.margin, 0.0));
        let s = RowStats::from_logits(&[3.0f64, 3.0], 0);
        assert_eq!(s.pred, 0);
        assert!(s.correct);
        assert!(close(s.gold_prob, 0.5));
    }

    #[test]
    fn huge_logits_do_not_overflow() {
        let s = RowStats::from_logits(&[1000.0f64, -1000.0], 1);
        assert!(s.gold_prob >= 0.0 && s.gold_prob < 1e-300);
        assert!(close(s.loss, 2000.0));
        assert!(s.el2n.is_finite());
    }

    fn feed(acc: &mut SampleAccumulators, sample: usize, trend: &[(f64, bool)]) {
        for (e, &(p, c)) in trend.iter().enumerate() {
            acc.observe(sample, e as u32, p, c, p - 0.5, 1.0 - p).unwrap();
        }
    }

    #[test]
    fn accumulated_metrics_match_hand_computed_values() {
        let mut acc = SampleAccumulators::new(4);
        // Learned at 1, forgotten at 2, relearned at 3, forgotten at 4: 2 events.
        feed(&mut acc, 0, &[(0.2, false), (0.6, true), (0.4, false), (0.9, true), (0.3, false)]);
        // Never learned.
        feed(&mut acc, 1, &[(0.1, false), (0.3, false)]);
        // One epoch only.
        feed(&mut acc, 2, &[(0.7, true)]);

        let m = acc.metrics(0).unwrap();
        let ps = [0.2, 0.6, 0.4, 0.9, 0.3];
        let mean = ps.iter().sum::<f64>() / 5.0;
        let var = ps.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 5.0;
        assert_eq!(m.epochs, 5);
        assert!(close(m.confidence, 0.48));
        assert!(close(m.variability, var.sqrt()));
        assert!(close(m.correctness, 0.4));
        assert_eq!(m.correct_count, 2);
        assert_eq!(m.forgetting_events, 2);
        assert_eq!(m.first_learned_epoch, Some(1));
        assert!(close(m.aum, mean - 0.5));
        assert!((m.el2n - (1.0 - mean)).abs() < 1e-7, "el2n sums in f32");
        assert!(close(m.threshold_closeness, 0.48 * 0.52));

        let m = acc.metrics(1).unwrap();
        assert_eq!(m.first_learned_epoch, None);
        assert_eq!(m.forgetting_events, 0);
        assert_eq!(m.correct_count, 0);
        assert!(close(m.correctness, 0.0));
        assert!(close(m.variability, 0.1));

        let m = acc.metrics(2).unwrap();
        assert_eq!(m.epochs, 1);
        assert!(close(m.variability, 0.0));
        assert!(close(m.confidence, 0.7));
        assert_eq!(m.first_learned_epoch, Some(0));

        assert!(acc.metrics(3).is_none());
    }

    #[test]
    fn the_state_of_a_sample_is_40_bytes() {
        assert_eq!(SampleAccumulators::BYTES_PER_SAMPLE, 40);
    }

    #[test]
    fn first_learned_is_the_absolute_epoch_for_a_later_window() {
        let mut acc = SampleAccumulators::new(1);
        acc.observe(0, 3, 0.2, false, 0.0, 0.0).unwrap();
        acc.observe(0, 4, 0.8, true, 0.0, 0.0).unwrap();
        assert_eq!(acc.metrics(0).unwrap().first_learned_epoch, Some(4));
    }

    #[test]
    fn duplicate_and_out_of_order_epochs_are_rejected_without_change() {
        let mut acc = SampleAccumulators::new(2);
        acc.observe(0, 1, 0.5, true, 0.0, 0.0).unwrap();
        let before = acc.metrics(0);
        let err = acc.observe(0, 1, 0.9, true, 0.0, 0.0).unwrap_err();
        assert!(err.to_string().contains("sample_id 0"), "{err}");
        assert!(acc.observe(0, 0, 0.9, true, 0.0, 0.0).is_err());
        assert!(acc.observe(7, 0, 0.9, true, 0.0, 0.0).is_err());
        assert_eq!(acc.metrics(0), before);
    }
}
