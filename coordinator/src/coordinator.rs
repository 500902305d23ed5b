//! The coordinator: the one object the gRPC services, `carto run` and tests share.
pub use crate::scheduler::*;
