//! Replays the fuzz corpus (`fuzz/corpus/decode_validate`) through the same
//! decoding and validation path as the fuzz target, so every input the fuzzer
//! ever kept stays a regression test, without a nightly toolchain. The seeds
//! are written by `write_seeds` (ignored; run it to regenerate).

use std::path::PathBuf;

use carto_common::dynamics::DynamicsColumns;
use carto_common::ipc;
use carto_common::metrics::RowStats;
use carto_coordinator::aggregator::{check_chunk, fuzz_rules};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_validate")
}

fn good_rows() -> DynamicsColumns {
    let job = fuzz_rules();
    let rules = job.as_rules();
    let mut cols = DynamicsColumns::default();
    for s in 0..64usize {
        if rules.owner[s] == 0 {
            let label = rules.labels[s];
            cols.push(s as i64, label, &RowStats::from_logits(&[0.1 * s as f64, -0.2, 0.3], label as usize));
        }
    }
    cols
}

#[test]
fn the_corpus_never_panics_and_the_seeds_behave() {
    let job = fuzz_rules();
    let rules = job.as_rules();
    let mut files = 0;
    for e in std::fs::read_dir(corpus()).expect("fuzz/corpus/decode_validate exists") {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut marks = job.marks();
        let result = check_chunk(&bytes, &rules, &mut marks, &name);
        assert!(marks.iter().all(|&w| w == 0), "{name}: the scratch bitset is left clean");
        if name.starts_with("seed-good") {
            assert!(result.is_ok(), "{name}: {}", result.unwrap_err());
        } else if name.starts_with("seed-bad") || name.starts_with("regression-") {
            let err = result.expect_err(&name).to_string();
            assert!(err.starts_with(&name), "errors name their source: {err}");
        }
        files += 1;
    }
    assert!(files >= 6, "the corpus holds the seeds at least ({files} files)");
}

#[test]
#[ignore = "regenerates the seed corpus"]
fn write_seeds() {
    let dir = corpus();
    std::fs::create_dir_all(&dir).unwrap();
    let good = good_rows();
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    write("seed-good-full", ipc::encode_batch(&good.to_batch()).unwrap());
    write("seed-good-part", ipc::encode_batch(&good.slice_to_batch(0, 5)).unwrap());
    let edit = |f: &dyn Fn(&mut DynamicsColumns)| {
        let mut c = good.clone();
        f(&mut c);
        ipc::encode_batch(&c.to_batch()).unwrap()
    };
    write("seed-bad-nan", edit(&|c| c.margin[1] = f64::NAN));
    write("seed-bad-prob", edit(&|c| c.gold_prob[0] = 2.0));
    write("seed-bad-dup", edit(&|c| c.sample_id[1] = c.sample_id[0]));
    write("seed-bad-shard", edit(&|c| c.sample_id[0] = (0..64).find(|&s| fuzz_rules().as_rules().owner[s] == 1).unwrap() as i64));
    write("seed-bad-schema", ipc::encode_batch(&good.to_batch().project(&[0, 2, 1]).unwrap()).unwrap());
    let mut truncated = ipc::encode_batch(&good.to_batch()).unwrap();
    truncated.truncate(truncated.len() / 2);
    write("seed-bad-truncated", truncated);
}
