//! Every byte a worker sends in an epoch report goes through
//! `aggregator::check_chunk` (Arrow IPC decoding, schema conformance, row
//! validation). Whatever the bytes, it must return Ok or a clear error —
//! never panic, hang or abort.
#![no_main]

use carto_coordinator::aggregator::{check_chunk, fuzz_rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = fuzz_rules();
    let _ = check_chunk(data, &rules.as_rules(), "fuzz");
});
