//! What the in-process training tests share.

use std::cell::RefCell;

use carto_common::dynamics::DynamicsColumns;
use carto_worker::trainer::{EpochReport, Reporter, StepProgress};
use carto_worker::WorkerError;

/// A reporter that keeps what the training loop sends: each epoch's dynamics
/// rows and its report.
#[derive(Default)]
pub struct Collector {
    pub rows: RefCell<Vec<(u32, DynamicsColumns)>>,
    pub reports: RefCell<Vec<EpochReport>>,
}

impl Reporter for Collector {
    fn progress(&self, _p: StepProgress) {}
    fn aborted(&self) -> bool {
        false
    }
    fn dynamics(&self, epoch: u32, rows: &DynamicsColumns) -> Result<u64, WorkerError> {
        self.rows.borrow_mut().push((epoch, rows.clone()));
        Ok(rows.len() as u64)
    }
    fn epoch_done(&self, r: EpochReport) -> Result<bool, WorkerError> {
        self.reports.borrow_mut().push(r);
        Ok(false)
    }
}
