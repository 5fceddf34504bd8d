//! The tokio runtime and its size.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// The environment variable naming the number of worker threads (tokio's own).
pub const ENV_WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

/// Worker threads: `flag` when given (a binary's `--worker-threads`), else `env` (the value of
/// [`ENV_WORKER_THREADS`]; ignored unless a positive number, surrounding blanks allowed), else
/// `cpus`; at least one.
pub fn worker_threads(flag: Option<usize>, env: Option<&str>, cpus: usize) -> usize {
    flag.or_else(|| env.and_then(|v| v.trim().parse::<usize>().ok()).filter(|n| *n > 0))
        .unwrap_or(cpus)
        .max(1)
}

/// The CPUs the process may use (a pod's CPU limit counts); one when unknown.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A runtime with `workers` worker threads and every driver enabled. With one (or none), a
/// current-thread runtime: everything is served from that thread without cross-thread wake-ups,
/// which costs noticeably less per call on a one-CPU pod.
pub fn build_runtime(workers: usize) -> io::Result<Runtime> {
    if workers <= 1 {
        Builder::new_current_thread().enable_all().build()
    } else {
        Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
}

/// The runtime a binary runs on: [`worker_threads`] from `flag`, [`ENV_WORKER_THREADS`] and
/// [`available_cpus`], built by [`build_runtime`].
pub fn runtime(flag: Option<usize>) -> io::Result<Runtime> {
    let env = std::env::var(ENV_WORKER_THREADS).ok();
    build_runtime(worker_threads(flag, env.as_deref(), available_cpus()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn worker_threads_follow_the_environment_then_the_cpus() {
        assert_eq!(worker_threads(None, None, 4), 4);
        assert_eq!(worker_threads(None, Some("1"), 4), 1);
        assert_eq!(worker_threads(None, Some(" 3 "), 1), 3);
        assert_eq!(worker_threads(None, Some("0"), 2), 2);
        assert_eq!(worker_threads(None, Some("many"), 2), 2);
        assert_eq!(worker_threads(None, None, 0), 1);
    }

    #[test]
    fn the_flag_comes_first() {
        assert_eq!(worker_threads(Some(2), Some("3"), 4), 2);
        assert_eq!(worker_threads(Some(1), None, 4), 1);
        // `--worker-threads 0` asks for as little as there is: one thread.
        assert_eq!(worker_threads(Some(0), Some("3"), 4), 1);
    }

    #[test]
    fn one_worker_is_a_current_thread_runtime() {
        use tokio::runtime::RuntimeFlavor;
        assert_eq!(
            build_runtime(1).unwrap().handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        assert_eq!(
            build_runtime(0).unwrap().handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        let multi = build_runtime(2).unwrap();
        assert_eq!(multi.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(multi.metrics().num_workers(), 2);
        assert_eq!(multi.block_on(async { 1 + 1 }), 2);
    }
}
