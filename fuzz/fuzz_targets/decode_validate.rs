//! Every byte a worker sends in an epoch report goes through
//! `aggregator::check_chunk` (Arrow IPC decoding, schema conformance, row
//! validation). Whatever the bytes, it must return Ok or a clear error —
//! never panic, hang or abort.
#![no_main]

use carto_coordinator::aggregator::{check_chunk, fuzz_rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on every panic, even one the decoder catches and
    // turns into an error; keep its abort for panics nobody catches (those
    // still reach libfuzzer-sys's own catch_unwind and fail the run).
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let job = fuzz_rules();
    let mut marks = job.marks();
    let _ = check_chunk(data, &job.as_rules(), &mut marks, "fuzz");
    assert!(marks.iter().all(|&w| w == 0), "scratch bitset left dirty");
});
