//! Which samples each rank trains on, step by step: PyTorch DistributedSampler
//! semantics with a seed-reproducible permutation that the coordinator and every
//! worker compute identically (no libtorch: a SplitMix64 Fisher–Yates shuffle).
//!
//! Epoch e: a permutation of `[0, n)` seeded by (seed, e), padded to a multiple
//! of the world size W by repeating its head; rank r takes positions r, r+W, ….
//! The global batch B is fixed, the local batch is B / W, and step s of every
//! rank covers the global positions `[s·B, (s+1)·B)` — the same samples a single
//! worker would see in its step s. Padded positions (≥ n) are duplicates: they
//! are marked so the trainer masks them out of the loss and the dynamics.

use crate::{CartoError, Result};

/// One rank's view of the data-parallel sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlan {
    pub num_samples: u64,
    pub seed: u64,
    pub world_size: u32,
    pub rank: u32,
    pub global_batch: u32,
}

/// One item of a local batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardItem {
    pub sample: u64,
    /// A padding duplicate: trained on by PyTorch's sampler, but here masked
    /// out of the loss and never reported.
    pub padding: bool,
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast and well mixed; the
/// same sequence on every platform, so a seed names one shuffle (or subset).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, bound)` by Lemire's multiply-shift (bias < 2^-32 for
    /// bounds below 2^32, irrelevant for shuffling).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next() as u128 * bound as u128) >> 64) as u64
    }
    /// Uniform in `[0, n)` (n ≥ 1) by rejection: no bias at all.
    pub fn below_unbiased(&mut self, n: u64) -> u64 {
        let reject = (u64::MAX % n + 1) % n; // 2^64 mod n
        loop {
            let x = self.next();
            if x <= u64::MAX - reject {
                return x % n;
            }
        }
    }
}

/// The most samples a dataset can have (sample ids are shuffled as u32).
pub const MAX_SAMPLES: u64 = u32::MAX as u64;
/// The most ranks a job can have (owners are stored as u16).
pub const MAX_WORLD: u32 = u16::MAX as u32;

/// The global permutation of epoch `epoch`.
pub fn permutation(num_samples: u64, seed: u64, epoch: u32) -> Vec<u32> {
    assert!(num_samples <= MAX_SAMPLES, "at most {MAX_SAMPLES} samples");
    let mut perm: Vec<u32> = (0..num_samples as u32).collect();
    let mut rng = SplitMix64(seed ^ (epoch as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    perm
}

impl ShardPlan {
    /// Checks the plan: a non-empty dataset, rank < world, and a global batch
    /// that splits evenly across ranks.
    pub fn validate(&self) -> Result<()> {
        if self.num_samples == 0 {
            return Err(CartoError::invalid("the dataset has no rows"));
        }
        if self.num_samples > MAX_SAMPLES {
            return Err(CartoError::invalid(format!("{} rows: at most {MAX_SAMPLES} are supported", self.num_samples)));
        }
        if self.world_size > MAX_WORLD {
            return Err(CartoError::invalid(format!("{} workers: at most {MAX_WORLD} are supported", self.world_size)));
        }
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(CartoError::invalid(format!(
                "rank {} is outside world size {}",
                self.rank, self.world_size
            )));
        }
        if self.global_batch == 0 || self.global_batch % self.world_size != 0 {
            return Err(CartoError::invalid(format!(
                "batch_size {} must be a positive multiple of the number of workers ({})",
                self.global_batch, self.world_size
            )));
        }
        Ok(())
    }

    /// Dataset length padded to a multiple of the world size.
    pub fn padded_len(&self) -> u64 {
        self.num_samples.div_ceil(self.world_size as u64) * self.world_size as u64
    }

    /// Positions per rank per epoch.
    pub fn per_rank(&self) -> u64 {
        self.padded_len() / self.world_size as u64
    }

    pub fn local_batch(&self) -> u64 {
        (self.global_batch / self.world_size) as u64
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.per_rank().div_ceil(self.local_batch())
    }

    /// Real (non-padding) samples in global step `step`, summed over all ranks:
    /// the divisor of the summed loss, so every rank normalises identically.
    pub fn global_real_in_step(&self, step: u64) -> u64 {
        let start = step * self.global_batch as u64;
        let end = (start + self.global_batch as u64).min(self.num_samples);
        end.saturating_sub(start)
    }

    /// This rank's items for the whole epoch, in training order.
    pub fn rank_items(&self, epoch: u32) -> Vec<ShardItem> {
        let perm = permutation(self.num_samples, self.seed, epoch);
        let n = self.num_samples;
        let w = self.world_size as u64;
        (0..self.per_rank())
            .map(|k| {
                let pos = k * w + self.rank as u64;
                if pos < n {
                    ShardItem { sample: perm[pos as usize] as u64, padding: false }
                } else {
                    ShardItem { sample: perm[(pos - n) as usize % n as usize] as u64, padding: true }
                }
            })
            .collect()
    }

    /// `--group-by-length`: reorders this rank's items like transformers'
    /// `LengthGroupedSampler` — the shuffled order is cut into mega-batches of
    /// 50 local batches, and each is sorted by `len` (longest first), so a
    /// batch holds texts of similar length and pads less. Only real items
    /// move: padding duplicates keep their positions, so every step keeps
    /// its count of real samples, and the rank keeps its samples (the
    /// coordinator's `owners` stay true).
    pub fn group_by_length(&self, items: &mut [ShardItem], len: impl Fn(u64) -> usize) {
        let mega = 50 * self.local_batch() as usize;
        for chunk in items.chunks_mut(mega.max(1)) {
            let slots: Vec<usize> = (0..chunk.len()).filter(|&k| !chunk[k].padding).collect();
            let mut real: Vec<ShardItem> = slots.iter().map(|&k| chunk[k]).collect();
            // Stable: equal lengths keep their shuffled order.
            real.sort_by_key(|it| std::cmp::Reverse(len(it.sample)));
            for (slot, item) in slots.into_iter().zip(real) {
                chunk[slot] = item;
            }
        }
    }

    /// Which rank reports each sample in `epoch` (`owner[sample] = rank`), for
    /// checking that a worker only reports samples of its own shard.
    pub fn owners(num_samples: u64, seed: u64, world_size: u32, epoch: u32) -> Vec<u16> {
        assert!(world_size <= MAX_WORLD);
        let perm = permutation(num_samples, seed, epoch);
        let mut owner = vec![0u16; num_samples as usize];
        for (pos, &s) in perm.iter().enumerate() {
            owner[s as usize] = (pos as u64 % world_size as u64) as u16;
        }
        owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: u64, w: u32, r: u32, b: u32) -> ShardPlan {
        ShardPlan { num_samples: n, seed: 42, world_size: w, rank: r, global_batch: b }
    }

    #[test]
    fn permutation_is_a_permutation_and_depends_on_seed_and_epoch() {
        let p = permutation(1000, 7, 0);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_ne!(p, permutation(1000, 7, 1));
        assert_ne!(p, permutation(1000, 8, 0));
        assert_eq!(p, permutation(1000, 7, 0));
    }

    #[test]
    fn ranks_cover_every_sample_once_plus_padding() {
        let (n, w) = (10u64, 3u32);
        let mut seen = vec![0; n as usize];
        let mut padding = 0;
        for r in 0..w {
            let items = plan(n, w, r, 6).rank_items(2);
            assert_eq!(items.len(), 4); // ceil(10/3)
            for it in items {
                if it.padding {
                    padding += 1
                } else {
                    seen[it.sample as usize] += 1
                }
            }
        }
        assert_eq!(seen, vec![1; n as usize]);
        assert_eq!(padding, 2);
    }

    #[test]
    fn step_s_of_all_ranks_is_step_s_of_one_rank() {
        let (n, b) = (23u64, 4u32);
        let one = plan(n, 1, 0, b);
        let single: Vec<u64> = one.rank_items(1).iter().map(|i| i.sample).collect();
        let two: Vec<Vec<ShardItem>> = (0..2).map(|r| plan(n, 2, r, b).rank_items(1)).collect();
        let local = plan(n, 2, 0, b).local_batch() as usize;
        assert_eq!(plan(n, 2, 0, b).steps_per_epoch(), one.steps_per_epoch());
        for s in 0..one.steps_per_epoch() as usize {
            let mut want: Vec<u64> = single[s * b as usize..((s + 1) * b as usize).min(n as usize)].to_vec();
            let mut got: Vec<u64> = two
                .iter()
                .flat_map(|items| items.iter().skip(s * local).take(local))
                .filter(|i| !i.padding)
                .map(|i| i.sample)
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "step {s}");
            assert_eq!(one.global_real_in_step(s as u64), want.len() as u64);
        }
    }

    #[test]
    fn owners_agree_with_rank_items() {
        let owners = ShardPlan::owners(11, 42, 3, 4);
        for r in 0..3 {
            for it in plan(11, 3, r, 3).rank_items(4).iter().filter(|i| !i.padding) {
                assert_eq!(owners[it.sample as usize] as u32, r);
            }
        }
    }

    #[test]
    fn uneven_batches_are_refused_with_the_numbers() {
        let err = plan(10, 3, 0, 8).validate().unwrap_err().to_string();
        assert!(err.contains("batch_size 8") && err.contains("3"), "{err}");
        assert!(plan(0, 1, 0, 8).validate().is_err());
        assert!(plan(10, 2, 2, 8).validate().is_err());
        assert!(plan(10, 2, 1, 8).validate().is_ok());
    }

    #[test]
    fn grouping_by_length_sorts_mega_batches_and_keeps_padding_in_place() {
        // 2 ranks, global batch 4 (local 2): mega-batches of 100 items.
        let plan = ShardPlan { num_samples: 301, seed: 5, world_size: 2, rank: 1, global_batch: 4 };
        let items = plan.rank_items(0);
        let mut grouped = items.clone();
        let len = |s: u64| (s * 7919 % 61) as usize;
        plan.group_by_length(&mut grouped, len);
        // The same samples, each padding duplicate where it was.
        let mut a: Vec<_> = items.iter().map(|i| (i.sample, i.padding)).collect();
        let mut b: Vec<_> = grouped.iter().map(|i| (i.sample, i.padding)).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        for (x, y) in items.iter().zip(&grouped) {
            assert_eq!(x.padding, y.padding);
        }
        assert!(items.iter().any(|i| i.padding), "the case has padding");
        // Within each mega-batch of 100, real items run longest first; across
        // mega-batches the order is not global.
        for chunk in grouped.chunks(100) {
            let lens: Vec<usize> = chunk.iter().filter(|i| !i.padding).map(|i| len(i.sample)).collect();
            assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{lens:?}");
        }
        assert_ne!(grouped, items);
    }
}
