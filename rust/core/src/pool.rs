//! What every long-running core call shares: the rayon thread pool it runs on, and the cancel
//! flag it checks between units of work.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// `Err(Interrupted)` once `cancel` is set. The caller's staged output is removed as the error
/// unwinds (see `StagedDir`), so a cancelled call leaves nothing behind.
pub fn check_cancel(cancel: Option<&AtomicBool>) -> Result<()> {
    match cancel {
        Some(c) if c.load(Ordering::Relaxed) => Err(Error::Interrupted),
        _ => Ok(()),
    }
}

/// A pool of `threads` workers, or rayon's default (one per core) when `None`.
pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Config("--threads must be at least 1".into()));
        }
        b = b.num_threads(n);
    }
    b.build()
        .map_err(|e| Error::Config(format!("cannot start threads: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_counted_and_zero_is_refused() {
        assert_eq!(thread_pool(Some(2)).unwrap().current_num_threads(), 2);
        assert!(matches!(thread_pool(Some(0)), Err(Error::Config(_))));
        assert!(thread_pool(None).is_ok());
    }

    #[test]
    fn cancel_is_seen_once_set() {
        let flag = AtomicBool::new(false);
        assert!(check_cancel(None).is_ok());
        assert!(check_cancel(Some(&flag)).is_ok());
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(check_cancel(Some(&flag)), Err(Error::Interrupted)));
    }
}
