//! AUM threshold samples (Pleiss et al. 2020, "Identifying Mislabeled Data
//! using the Area Under the Margin Ranking"): with `--threshold-samples` a
//! job trains two more runs after the map's; in each, a random ⌊N/(K+1)⌋ of
//! the samples is moved to a fake class K that no real sample has. Those
//! samples are mislabeled by construction, so their AUM shows what the
//! margin of a mislabeled sample looks like, on this data and model: a real
//! sample whose AUM is below a percentile of theirs is likely mislabeled
//! (the coordinator's `label_errors` module chooses it). The two runs' sets
//! are disjoint, so every sample is a real
//! one in at least one run. Coordinator and workers derive the same sets.

use crate::sampler::permutation;

/// The name of class K in a threshold run's files (string labels).
pub const FAKE_CLASS_NAME: &str = "(threshold sample)";

/// Run 0 is the map's; runs 1 and 2 carry threshold samples.
pub const RUNS: u32 = 3;

/// A fixed offset of the job's seed, so the sets do not follow the shuffles.
const SALT: u64 = 0x7A5E_11D0_C0FF_EE01;

/// The run epoch `epoch` belongs to, of a job of `epochs` epochs per run.
pub fn run_of(epoch: u32, epochs: u32) -> u32 {
    epoch / epochs.max(1)
}

/// Whether each sample is a threshold sample of `run` (1 or 2; run 0 has none).
pub fn threshold_set(n: usize, num_classes: usize, seed: u64, run: u32) -> Vec<bool> {
    let mut set = vec![false; n];
    if run == 0 {
        return set;
    }
    let m = n / (num_classes + 1);
    let order = permutation(n as u64, seed ^ SALT, 0);
    let from = (run as usize - 1) * m;
    for &s in order.iter().skip(from).take(m) {
        set[s as usize] = true;
    }
    set
}

/// The labels of `run`: its threshold samples in class `num_classes`.
pub fn run_labels(labels: &[i64], num_classes: usize, seed: u64, run: u32) -> Vec<i64> {
    let set = threshold_set(labels.len(), num_classes, seed, run);
    labels.iter().zip(set).map(|(&l, t)| if t { num_classes as i64 } else { l }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_sets_are_disjoint_random_and_one_in_k_plus_one() {
        let (n, k) = (1000, 3);
        let a = threshold_set(n, k, 7, 1);
        let b = threshold_set(n, k, 7, 2);
        assert_eq!(a.iter().filter(|&&t| t).count(), 250);
        assert_eq!(b.iter().filter(|&&t| t).count(), 250);
        assert!(a.iter().zip(&b).all(|(x, y)| !(x & y)), "disjoint: every sample is real in some run");
        assert!(threshold_set(n, k, 7, 0).iter().all(|&t| !t), "the map's run has none");
        assert_eq!(a, threshold_set(n, k, 7, 1), "the same sets everywhere");
        assert_ne!(a, threshold_set(n, k, 8, 1), "another seed, other sets");
        // Not a block of ids: spread over the whole range.
        let first_half = a[..500].iter().filter(|&&t| t).count();
        assert!((90..160).contains(&first_half), "{first_half}");
        // Binary labels: a third each, still disjoint.
        let c = threshold_set(10, 1, 1, 1);
        let d = threshold_set(10, 1, 1, 2);
        assert_eq!((c.iter().filter(|&&t| t).count(), d.iter().filter(|&&t| t).count()), (5, 5));
        assert!(c.iter().zip(&d).all(|(x, y)| x ^ y));
    }

    #[test]
    fn threshold_samples_move_to_the_extra_class() {
        let labels = vec![0, 1, 2, 0, 1, 2, 0, 1];
        let l = run_labels(&labels, 3, 5, 2);
        let set = threshold_set(8, 3, 5, 2);
        for i in 0..8 {
            assert_eq!(l[i], if set[i] { 3 } else { labels[i] });
        }
        assert_eq!(l.iter().filter(|&&x| x == 3).count(), 2);
        assert_eq!(run_of(0, 5), 0);
        assert_eq!(run_of(5, 5), 1);
        assert_eq!(run_of(14, 5), 2);
    }
}
