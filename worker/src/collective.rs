//! Collectives between the ranks of one job. One rank needs none; the c10d
//! process groups implement the same trait for several.

use tch::Tensor;

use crate::WorkerError;

pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// In-place sum of `t` over all ranks.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), WorkerError>;
    /// Overwrites `t` with rank `root`'s value.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), WorkerError>;
}

/// The world of one.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<(), WorkerError> {
        Ok(())
    }
    fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<(), WorkerError> {
        Ok(())
    }
}
