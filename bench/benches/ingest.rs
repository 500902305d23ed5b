//! Aggregator ingest: Arrow IPC chunks as workers send them → per-sample
//! accumulators, decode included (issue 7, deliverable 1).
//!
//! `stage`: decode each chunk, conform and validate it (ownership, labels,
//! duplicates, ranges) and scatter it into the epoch's stage — what the
//! coordinator does per chunk on its blocking pool. `fold`: the epoch's
//! commit, the stage folded into the 40-byte accumulators. Both measure
//! epoch 1, in steady state: epoch 0 was staged and folded in the setup, so
//! the stage's arrays are reused as in a running job. `read bandwidth`: a sequential sum over 256 MiB,
//! this machine's memory bandwidth for the same run, to set the rows/s
//! against.
//!
//!     cargo bench -p carto-bench --bench ingest

use std::hint::black_box;
use std::sync::Arc;

use carto_coordinator::aggregator::{conform, Aggregator};
use carto_coordinator::outputs::SampleInfo;
use carto_common::ipc;
use carto_common::sampler::ShardPlan;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SAMPLES: u64 = 1_000_000;
const CLASSES: u32 = 4;
const SEED: u64 = 42;
/// What workers send: chunks of at most 4 MiB.
const CHUNK_BYTES: usize = 4 << 20;

/// Each rank's rows of `epoch` (sorted by sample id, as workers send them),
/// encoded into IPC chunks.
fn chunks(world: u32, epoch: u32) -> Vec<(u32, Vec<u8>)> {
    let owners = ShardPlan::owners(SAMPLES, SEED, world, epoch);
    let mut out = Vec::new();
    for rank in 0..world {
        let mine: Vec<u64> = (0..SAMPLES).filter(|&s| owners[s as usize] as u32 == rank).collect();
        let cols = carto_bench::synthetic_rows(&mine, epoch, CLASSES, 7);
        for c in ipc::encode_dynamics(&cols, CHUNK_BYTES).unwrap() {
            out.push((rank, c));
        }
    }
    out
}

/// The job's generation in these benchmarks (one, never re-formed).
const GENERATION: u64 = 1;

/// An aggregator that has folded epoch 0 and opened epoch 1.
fn aggregator(world: u32, out: &std::path::Path, epoch0: &[(u32, Vec<u8>)]) -> Aggregator {
    let labels = (0..SAMPLES).map(|s| carto_bench::label_of(s, CLASSES)).collect();
    let info = Arc::new(SampleInfo { labels, label_names: None, ids: None });
    let mut agg = Aggregator::new(out, info, CLASSES as usize, SEED, world, 3, true);
    agg.begin_epoch(0, GENERATION);
    stage_all(&mut agg, 0, epoch0);
    agg.fold_stage().unwrap();
    agg.begin_epoch(1, GENERATION);
    agg
}

fn stage_all(agg: &mut Aggregator, epoch: u32, chunks: &[(u32, Vec<u8>)]) -> usize {
    let mut rows = 0;
    for (rank, bytes) in chunks {
        for batch in ipc::decode_chunk(bytes, "bench").unwrap() {
            let batch = conform(&batch, "bench").unwrap();
            rows += agg.stage_batch(epoch, GENERATION, *rank, &batch, "bench").unwrap();
        }
    }
    rows
}

fn ingest(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10);
    g.throughput(Throughput::Elements(SAMPLES));
    for world in [1u32, 8, 64] {
        let (epoch0, epoch1) = (chunks(world, 0), chunks(world, 1));
        g.bench_function(format!("stage/world={world}"), |b| {
            b.iter_batched(
                || aggregator(world, tmp.path(), &epoch0),
                |mut agg| {
                    assert_eq!(stage_all(&mut agg, 1, &epoch1), SAMPLES as usize);
                    agg
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("fold/world={world}"), |b| {
            b.iter_batched(
                || {
                    let mut agg = aggregator(world, tmp.path(), &epoch0);
                    stage_all(&mut agg, 1, &epoch1);
                    agg
                },
                |mut agg| {
                    agg.fold_stage().unwrap();
                    agg
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("memory");
    g.sample_size(10);
    let words: Vec<u64> = (0..(256u64 << 20) / 8).collect();
    g.throughput(Throughput::Bytes(256 << 20));
    g.bench_function("read bandwidth (sum of 256 MiB)", |b| {
        b.iter(|| black_box(&words).iter().fold(0u64, |a, &w| a.wrapping_add(w)))
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
