//! The rayon thread pool every parallel core call runs on, built one way for all of them.

use crate::error::{Error, Result};

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
}
