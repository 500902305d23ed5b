//! Locks that a panic cannot turn into a dead coordinator, and the rule that
//! the coordinator's state lock is never held across file I/O.
//!
//! `std::sync::Mutex` poisons itself when a thread panics while holding it;
//! `.lock().unwrap()` then panics in every later caller. Inputs never reach
//! a panic by design, but if one did, the coordinator must answer the next
//! call: [`lock`] takes the guard of a poisoned mutex as it is.
//!
//! [`StateGuard`] marks the current thread while it holds the state lock;
//! file I/O paths call [`assert_no_state_lock`], which counts violations
//! (tests assert the count stays zero) and fails debug builds at once.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

thread_local! {
    static HOLDS_STATE: Cell<u32> = const { Cell::new(0) };
}

static IO_UNDER_STATE_LOCK: AtomicU64 = AtomicU64::new(0);

/// Locks `m`, recovering the guard of a mutex poisoned by an earlier panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The coordinator's state lock, held: marks this thread until dropped.
pub struct StateGuard<'a, T> {
    guard: MutexGuard<'a, T>,
}

impl<'a, T> StateGuard<'a, T> {
    pub fn acquire(m: &'a Mutex<T>) -> Self {
        let guard = lock(m);
        HOLDS_STATE.with(|h| h.set(h.get() + 1));
        StateGuard { guard }
    }
}

impl<T> Drop for StateGuard<'_, T> {
    fn drop(&mut self) {
        HOLDS_STATE.with(|h| h.set(h.get().saturating_sub(1)));
    }
}

impl<T> Deref for StateGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for StateGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// Whether this thread holds the coordinator's state lock.
pub fn holds_state_lock() -> bool {
    HOLDS_STATE.with(|h| h.get() > 0)
}

/// Called before file I/O: the state lock must not be held.
pub fn assert_no_state_lock(what: &str) {
    if holds_state_lock() {
        IO_UNDER_STATE_LOCK.fetch_add(1, Ordering::Relaxed);
        tracing::error!("{what} while holding the coordinator's state lock");
        debug_assert!(false, "{what} while holding the coordinator's state lock");
    }
}

/// How many times file I/O ran under the state lock in this process.
pub fn io_under_state_lock() -> u64 {
    IO_UNDER_STATE_LOCK.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_marks_the_thread_and_io_under_it_is_counted() {
        let m = Mutex::new(1);
        assert!(!holds_state_lock());
        let before = io_under_state_lock();
        {
            let g = StateGuard::acquire(&m);
            assert_eq!(*g, 1);
            assert!(holds_state_lock());
            if !cfg!(debug_assertions) {
                assert_no_state_lock("a test write");
                assert_eq!(io_under_state_lock(), before + 1);
            }
        }
        assert!(!holds_state_lock());
        assert_no_state_lock("a write after the lock");
        assert!(io_under_state_lock() <= before + 1);
    }

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let m = std::sync::Arc::new(Mutex::new(5));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 5);
    }
}
