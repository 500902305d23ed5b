//! Writes synthetic training dynamics in carto's on-disk layout
//! (`DIR/dynamics/epoch=K/part-R.parquet`, the writer settings of a real
//! job, rows of each part sorted by sample_id as workers send them), to
//! benchmark `carto metrics` against other tools on the same files.

use std::path::PathBuf;

use carto_common::sampler::ShardPlan;
use carto_coordinator::outputs;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2_000_000)]
    samples: u64,
    #[arg(long, default_value_t = 5)]
    epochs: u32,
    #[arg(long, default_value_t = 4)]
    classes: u32,
    /// Parts per epoch (one per rank).
    #[arg(long, default_value_t = 8)]
    ranks: u32,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    for epoch in 0..a.epochs {
        let owners = ShardPlan::owners(a.samples, 42, a.ranks, epoch);
        for rank in 0..a.ranks {
            let mine: Vec<u64> = (0..a.samples).filter(|&s| owners[s as usize] as u32 == rank).collect();
            let rows = carto_bench::synthetic_rows(&mine, epoch, a.classes, 7);
            let path = outputs::dynamics_part(&a.out, epoch, rank);
            outputs::write_parquet_atomic(&path, &rows.to_batch(), None)?;
        }
        eprintln!("epoch {epoch} written");
    }
    println!("{} rows in {}", a.samples * a.epochs as u64, a.out.join("dynamics").display());
    Ok(())
}
