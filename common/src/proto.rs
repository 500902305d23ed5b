//! The generated wire API (`proto/carto/v1/carto.proto`).
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("carto.v1");

    impl EpochChunk {
        /// The messages of one rank's report of `epoch`: its Arrow IPC chunks
        /// (see `ipc::encode_dynamics`) under one header, each carrying the
        /// assignment's lease.
        pub fn report(job_id: &str, generation: u64, rank: u32, lease: &str, epoch: u32, chunks: Vec<Vec<u8>>) -> Vec<EpochChunk> {
            chunks
                .into_iter()
                .map(|arrow_ipc| EpochChunk {
                    job_id: job_id.to_string(),
                    generation,
                    rank,
                    epoch,
                    arrow_ipc,
                    lease: lease.to_string(),
                })
                .collect()
        }
    }

    /// Encoded descriptor set of carto.v1, for the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/carto_v1_descriptor.bin"));
}

/// Bumped whenever a worker and a coordinator of different versions could not talk.
pub const PROTOCOL_VERSION: u32 = 2;

/// Upper bound on one `EpochChunk.arrow_ipc`.
pub const MAX_CHUNK_BYTES: usize = 2 * 1024 * 1024;
