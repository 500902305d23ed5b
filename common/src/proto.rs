//! The generated wire API (`proto/carto/v1/carto.proto`).
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("carto.v1");

    /// Encoded descriptor set of carto.v1, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/carto_v1_descriptor.bin"));
}

/// Bumped whenever a worker and a coordinator of different versions could not talk.
pub const PROTOCOL_VERSION: u32 = 1;

/// Upper bound on one `EpochChunk.arrow_ipc`.
pub const MAX_CHUNK_BYTES: usize = 2 * 1024 * 1024;
