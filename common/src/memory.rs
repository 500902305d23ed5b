//! Memory layout helpers for the per-sample tables (accumulators, epoch
//! stages, labels): tens to thousands of megabytes read at random.
//!
//! - [`prefetch`]: folding loops whose reads skip through a table at strides
//!   the hardware prefetcher cannot follow (one rank's share of an epoch, ids
//!   ascending with random gaps) prefetch a few rows ahead; without it every
//!   row waits on a cache miss.
//! - [`reserve_huge`]: tables are backed by 2 MiB pages where the kernel
//!   offers them (transparent huge pages in `madvise` mode, the common
//!   default): with 4 KiB pages an 80 MB table overflows the TLB and every
//!   random access also walks the page table.

/// How many rows ahead folding loops prefetch: enough cache misses in flight
/// to cover memory latency at a few nanoseconds of work per row.
pub const PREFETCH_AHEAD: usize = 32;

/// Asks the CPU to start fetching `items[index]` (both ends, for an element
/// that straddles two cache lines). Out of range: nothing. Only a hint.
#[inline(always)]
pub fn prefetch<T>(items: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = items.get(index) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (item as *const T).cast::<i8>();
        // SAFETY: prefetching reads nothing; both addresses lie inside `item`.
        unsafe {
            _mm_prefetch(p, _MM_HINT_T0);
            if std::mem::size_of::<T>() > 8 {
                _mm_prefetch(p.add(std::mem::size_of::<T>() - 1), _MM_HINT_T0);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (items, index);
}

/// Reserves room for `total` elements in `v` and, on Linux, asks for
/// transparent huge pages over the untouched part before it is first
/// written (advice given later does not change pages already faulted in).
pub fn reserve_huge<T>(v: &mut Vec<T>, total: usize) {
    if total <= v.len() {
        return;
    }
    v.reserve(total - v.len());
    advise_huge(v);
}

/// Advises huge pages for `v`'s spare capacity. Below 4 MiB: nothing.
fn advise_huge<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let size = std::mem::size_of::<T>();
        let start = v.as_ptr() as usize + v.len() * size;
        let end = v.as_ptr() as usize + v.capacity() * size;
        let first = start.div_ceil(HUGE) * HUGE;
        let last = end / HUGE * HUGE;
        if last > first + HUGE {
            // SAFETY: the range lies inside `v`'s allocation; MADV_HUGEPAGE is
            // advice only and does not change the memory's contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// For batch commands that allocate and free many large buffers (decoded
/// Parquet batches): glibc's malloc then serves them from its heap instead
/// of a fresh mmap each, and keeps freed memory instead of returning it.
/// Every fresh mmap costs page faults and zeroing (perf: 9% of
/// `carto metrics`). Not for long-running servers: memory stays at its peak.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator's thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_huge_keeps_contents_and_reserves() {
        let mut v: Vec<u64> = (0..10).collect();
        reserve_huge(&mut v, 3_000_000);
        assert!(v.capacity() >= 3_000_000);
        assert_eq!(v, (0..10).collect::<Vec<_>>());
        v.resize(3_000_000, 7);
        prefetch(&v, 2_999_999);
        prefetch(&v, 9_999_999); // out of range: a no-op, not a fault
        assert_eq!(v[2_999_999], 7);
    }
}
