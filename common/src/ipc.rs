//! Arrow IPC chunks for the wire: each chunk is one self-contained IPC stream
//! (schema message + one record batch + end marker), at most `max_bytes` long,
//! so the coordinator can decode and validate every chunk on its own.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::dynamics::{self, DynamicsColumns};
use crate::{CartoError, Result};

/// Room kept for the schema message, batch metadata and padding of a chunk.
const CHUNK_OVERHEAD: usize = 16 * 1024;

/// Encodes one record batch as a standalone IPC stream.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() + CHUNK_OVERHEAD);
    let mut w = StreamWriter::try_new(&mut buf, &batch.schema())
        .map_err(|e| CartoError::internal(format!("arrow ipc: {e}")))?;
    w.write(batch).map_err(|e| CartoError::internal(format!("arrow ipc: {e}")))?;
    w.finish().map_err(|e| CartoError::internal(format!("arrow ipc: {e}")))?;
    drop(w);
    Ok(buf)
}

/// Splits dynamics rows into IPC chunks of at most `max_bytes` each.
pub fn encode_dynamics(cols: &DynamicsColumns, max_bytes: usize) -> Result<Vec<Vec<u8>>> {
    if max_bytes <= CHUNK_OVERHEAD + dynamics::ROW_BYTES {
        return Err(CartoError::invalid(format!("chunk limit {max_bytes} bytes is too small")));
    }
    let mut rows_per_chunk = ((max_bytes - CHUNK_OVERHEAD) / dynamics::ROW_BYTES).max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < cols.len() {
        let end = (start + rows_per_chunk).min(cols.len());
        let bytes = encode_batch(&cols.slice_to_batch(start, end))?;
        if bytes.len() > max_bytes && end - start > 1 {
            // Our size estimate was off: halve and retry this range.
            rows_per_chunk = (end - start) / 2;
            continue;
        }
        chunks.push(bytes);
        start = end;
    }
    Ok(chunks)
}

/// Decodes one chunk into its record batches. Errors name `what`.
///
/// The bytes come from the network, so a decoder panic is caught and becomes
/// an error too: arrow-ipc 60 panics on some malformed buffer offsets instead
/// of returning an error (found by `fuzz/`; such inputs are kept in its
/// corpus as `regression-arrow-panic-*`).
pub fn decode_chunk(bytes: &[u8], what: &str) -> Result<Vec<RecordBatch>> {
    let decoded = std::panic::catch_unwind(|| {
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| CartoError::invalid(format!("{what}: not an Arrow IPC stream: {e}")))?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| CartoError::invalid(format!("{what}: corrupt Arrow IPC stream: {e}")))
    });
    decoded.unwrap_or_else(|_| Err(CartoError::invalid(format!("{what}: corrupt Arrow IPC stream: buffers out of bounds"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamics::DynamicsView;
    use crate::metrics::RowStats;

    fn rows(n: usize) -> DynamicsColumns {
        let mut cols = DynamicsColumns::default();
        for i in 0..n {
            let s = RowStats::from_logits(&[i as f64 * 0.001, 0.5, -0.25], i % 3);
            cols.push(i as i64, (i % 3) as i64, &s);
        }
        cols
    }

    #[test]
    fn chunks_respect_the_limit_and_keep_every_row_in_order() {
        let cols = rows(100_000);
        let limit = 2 * 1024 * 1024;
        let chunks = encode_dynamics(&cols, limit).unwrap();
        assert!(chunks.len() >= 3, "100k rows × 57 B need ≥ 3 chunks of 2 MiB, got {}", chunks.len());
        let mut next = 0i64;
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= limit, "chunk {i} is {} bytes", c.len());
            for b in decode_chunk(c, "chunk").unwrap() {
                let v = DynamicsView::new(&b, "chunk").unwrap();
                for &id in v.sample_id {
                    assert_eq!(id, next);
                    next += 1;
                }
            }
        }
        assert_eq!(next, 100_000);
    }

    #[test]
    fn small_limits_still_make_valid_chunks() {
        let cols = rows(5000);
        let chunks = encode_dynamics(&cols, 64 * 1024).unwrap();
        assert!(chunks.iter().all(|c| c.len() <= 64 * 1024));
        let total: usize = chunks.iter().map(|c| decode_chunk(c, "c").unwrap()[0].num_rows()).sum();
        assert_eq!(total, 5000);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = decode_chunk(b"definitely not arrow", "rank 1 epoch 0 chunk 2").unwrap_err();
        assert!(err.to_string().starts_with("rank 1 epoch 0 chunk 2: "), "{err}");
    }
}
