//! `carto select --strategy coverage` through the real binary, on a small
//! hand-made metrics file whose strata can be counted by hand; the default
//! strategy is unchanged; bad combinations are one line and exit 2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const CARTO: &str = env!("CARGO_BIN_EXE_carto");
const N: usize = 100;

/// metrics.parquet with aum = el2n = sample_id (so low ids are the hard end
/// for aum and the easy end for el2n), labels alternating 0, 1; and a CSV
/// dataset of the same 100 rows, `name` = "row{i}".
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let ids: Vec<i64> = (0..N as i64).collect();
    let values: Vec<f64> = (0..N).map(|i| i as f64).collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("sample_id", Arc::new(Int64Array::from(ids.clone()))),
        ("label", Arc::new(Int64Array::from(ids.iter().map(|i| i % 2).collect::<Vec<_>>()))),
        ("aum", Arc::new(Float64Array::from(values.clone()))),
        ("el2n", Arc::new(Float64Array::from(values.clone()))),
        ("confidence", Arc::new(Float64Array::from(values.iter().map(|v| v / 100.0).collect::<Vec<_>>()))),
    ];
    let fields: Vec<Field> = cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), false)).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols.into_iter().map(|(_, a)| a).collect()).unwrap();
    let metrics = dir.join("metrics.parquet");
    let mut w = ArrowWriter::try_new(std::fs::File::create(&metrics).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let data = dir.join("data.csv");
    let mut csv = String::from("name,label\n");
    for i in 0..N {
        csv += &format!("row{i},{}\n", i % 2);
    }
    std::fs::write(&data, csv).unwrap();
    (metrics, data)
}

fn carto(args: &[&str]) -> Output {
    Command::new(CARTO).args(args).env_remove("RUST_LOG").output().expect("carto starts")
}

/// `carto select --metrics M --data D ARGS --out OUT`.
fn select(m: &Path, d: &Path, args: &[&str], out: &Path) -> Output {
    let mut all = vec!["select", "--metrics", m.to_str().unwrap(), "--data", d.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    carto(&all)
}

fn ok(o: &Output) {
    assert!(o.status.success(), "carto failed: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

fn error_line(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line, got:\n{stderr}");
    lines[0].to_string()
}

fn read(path: &Path) -> RecordBatch {
    let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("sample_id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
}

#[test]
fn coverage_samples_every_stratum_after_pruning_the_hard_end() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = fixture(dir.path());
    let out = dir.path().join("cov.parquet");
    // Defaults: --metric aum, --hard-prune 0.1. p = 10 prunes ids 0..9 (low
    // aum = hard); 10..=99 in 5 strata of width 17.8 hold 18 each; the budget
    // ⌊0.3 · 100 + 0.5⌋ = 30 gives each stratum 6.
    let r = select(&m, &d, &["--strategy", "coverage", "--fraction", "0.3", "--strata", "5", "--seed", "3"], &out);
    ok(&r);
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), format!("carto: wrote {} (30 of 100 rows, by coverage over aum)", out.display()));
    let s = read(&out);
    let chosen = ids(&s);
    assert_eq!(chosen.len(), 30);
    assert!(chosen.iter().all(|&i| i >= 10), "the hardest 10% never chosen: {chosen:?}");
    let mut per_stratum = [0; 5];
    for &i in &chosen {
        per_stratum[((i - 10) as f64 * 5.0 / 89.0).floor().min(4.0) as usize] += 1;
    }
    assert_eq!(per_stratum, [6; 5], "{chosen:?}");
    // The paper's order (aum ascending, hardest kept first), ranked 0..30.
    assert!(chosen.windows(2).all(|w| w[0] < w[1]), "{chosen:?}");
    let rank = s.column_by_name("select_rank").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(rank.values().to_vec(), (0..30).collect::<Vec<i64>>());
    // The dataset's own columns, lined up with the metrics.
    let names = s.column_by_name("name").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    for (row, &i) in chosen.iter().enumerate() {
        assert_eq!(names.value(row), format!("row{i}"));
    }
    for c in ["label", "carto_label", "aum", "el2n", "confidence"] {
        assert!(s.column_by_name(c).is_some(), "column {c} in {:?}", s.schema());
    }

    // The same seed, the same subset; another seed, another.
    let again = dir.path().join("again.parquet");
    ok(&select(&m, &d, &["--strategy", "coverage", "--fraction", "0.3", "--strata", "5", "--seed", "3"], &again));
    assert_eq!(ids(&read(&again)), chosen);
    let other = dir.path().join("other.parquet");
    ok(&select(&m, &d, &["--strategy", "coverage", "--fraction", "0.3", "--strata", "5", "--seed", "4"], &other));
    assert_ne!(ids(&read(&other)), chosen);

    // el2n: high = hard, so ids 90..99 go; rows come highest el2n first.
    let el2n = dir.path().join("el2n.parquet");
    ok(&select(&m, &d, &["--strategy", "coverage", "--metric", "el2n", "--fraction", "0.3", "--strata", "5"], &el2n));
    let e = ids(&read(&el2n));
    assert_eq!(e.len(), 30);
    assert!(e.iter().all(|&i| i < 90), "{e:?}");
    assert!(e.windows(2).all(|w| w[0] > w[1]), "{e:?}");

    // --per-class: ⌊0.3 · 50 + 0.5⌋ = 15 of each label, each class pruned on its own.
    let pc = dir.path().join("pc.parquet");
    ok(&select(&m, &d, &["--strategy", "coverage", "--per-class", "--fraction", "0.3"], &pc));
    let mut per: HashMap<i64, usize> = HashMap::new();
    for i in ids(&read(&pc)) {
        assert!(i >= 10, "class {}'s hardest 5 are 0..9: {i}", i % 2);
        *per.entry(i % 2).or_default() += 1;
    }
    assert_eq!(per, HashMap::from([(0, 15), (1, 15)]));
}

#[test]
fn the_default_strategy_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = fixture(dir.path());
    let top = dir.path().join("top.parquet");
    let r = select(&m, &d, &["--metric", "aum", "--fraction", "0.3"], &top);
    ok(&r);
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), format!("carto: wrote {} (30 of 100 rows, by aum)", top.display()));
    assert_eq!(ids(&read(&top)), (0..30).collect::<Vec<i64>>());
    let named = dir.path().join("named.parquet");
    ok(&select(&m, &d, &["--strategy", "top", "--metric", "aum", "--fraction", "0.3"], &named));
    assert_eq!(ids(&read(&named)), (0..30).collect::<Vec<i64>>());
}

#[test]
fn bad_combinations_are_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = fixture(dir.path());
    let out = dir.path().join("x.parquet");
    let cases: &[(&[&str], &str)] = &[
        (&["--strategy", "coverage", "--worst", "--fraction", "0.3"], "--worst does not apply to --strategy coverage"),
        (&["--strategy", "coverage", "--both-ends", "--fraction", "0.3"], "--both-ends does not apply to --strategy coverage"),
        (&["--strategy", "coverage", "--strata", "0", "--fraction", "0.3"], "--strata 0"),
        (&["--strategy", "coverage", "--hard-prune", "1", "--fraction", "0.3"], "--hard-prune 1 must be"),
        (&["--strategy", "coverage", "--hard-prune=-0.1", "--fraction", "0.3"], "--hard-prune -0.1 must be"),
        (&["--strategy", "coverage", "--fraction", "0.95"], "--fraction 0.95 asks for 95 of 100 samples, but --hard-prune 0.1 leaves 90"),
        (&["--strategy", "coverage", "--per-class", "--hard-prune", "0.5", "--fraction", "0.6"], "in class 0, but --hard-prune 0.5 leaves 25"),
        (&["--metric", "aum", "--strata", "5", "--fraction", "0.3"], "--strata applies only to --strategy coverage"),
        (&["--metric", "aum", "--hard-prune", "0.2", "--fraction", "0.3"], "--hard-prune applies only to --strategy coverage"),
        (&["--metric", "aum", "--seed", "1", "--fraction", "0.3"], "--seed applies only to --strategy coverage"),
        (&["--strategy", "top", "--fraction", "0.3"], "--metric is required with --strategy top"),
    ];
    for (args, expect) in cases {
        let line = error_line(&select(&m, &d, args, &out));
        assert!(line.starts_with("carto: error: ") && line.contains(expect), "{args:?}: {line}");
        assert!(!out.exists(), "{args:?} wrote nothing");
    }
    // No --metric and no --strategy: clap's usage error, as before.
    let r = select(&m, &d, &["--fraction", "0.3"], &out);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--metric"));
}
