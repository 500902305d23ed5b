//! Human progress of a job: a bar per epoch while it trains, one line per
//! finished epoch. Shared by `carto run` and `carto watch`.

use carto_common::proto::v1 as pb;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Display {
    bar: Option<ProgressBar>,
    bar_epoch: u32,
    printed: usize,
    quiet: bool,
    epochs_total: u32,
}

impl Display {
    pub fn new(quiet: bool, epochs_total: u32) -> Self {
        Display { bar: None, bar_epoch: u32::MAX, printed: 0, quiet, epochs_total }
    }

    pub fn update(&mut self, job: &pb::Job) {
        if self.quiet {
            return;
        }
        // Finished epochs: one line each, kept on screen.
        while self.printed < job.epochs.len() {
            let e = &job.epochs[self.printed];
            let mut line = format!(
                "epoch {}/{}  loss {:.4}  accuracy {:.4}  {:.0} samples/s  {:.1} s",
                e.epoch + 1,
                self.epochs_total,
                e.loss,
                e.accuracy,
                e.samples_per_sec,
                e.wall_seconds
            );
            if let (Some(l), Some(a)) = (e.eval_loss, e.eval_accuracy) {
                line += &format!("  eval loss {l:.4}  eval accuracy {a:.4}");
            }
            match self.bar.take() {
                Some(bar) if !bar.is_hidden() => bar.finish_with_message(line),
                _ => eprintln!("{line}"),
            }
            self.bar_epoch = u32::MAX;
            self.printed += 1;
        }
        let Some(p) = &job.progress else { return };
        if job.state != pb::JobState::Running as i32 || p.epoch >= self.epochs_total {
            return;
        }
        if self.bar_epoch != p.epoch {
            let bar = ProgressBar::with_draw_target(Some(p.samples_total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("epoch {}/{}", p.epoch + 1, self.epochs_total));
            self.bar = Some(bar);
            self.bar_epoch = p.epoch;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(p.samples_done);
            bar.set_message(format!(
                "loss {:.4}  accuracy {:.4}  {:.0} samples/s",
                p.loss, p.accuracy, p.samples_per_sec
            ));
        }
    }

    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

