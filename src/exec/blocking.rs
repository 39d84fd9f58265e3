//! Blocking filesystem work (a write's fsyncs) run for the calling task.

/// Run `work`, which blocks (fsync, rename), for the calling task. On the
/// multi-threaded runtime it runs right here, on this worker thread, whose
/// other tasks are handed to another thread (`block_in_place`); elsewhere
/// (a current-thread runtime, as in unit tests) on the blocking pool.
///
/// Why not always the blocking pool: the hop there and back wakes two
/// threads, and on a virtual machine whose idle vCPUs halt each wake-up
/// costs tens of microseconds: a noticeable share of a durable 4 KiB write.
///
/// A panic in `work` is returned as an error, as the blocking pool's join
/// would return it.
pub async fn run_blocking<T, F>(work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    let on_workers = Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
    if on_workers {
        tokio::task::block_in_place(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)))
            .map_err(|panic| panic_message(&panic))
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| e.to_string())
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("panicked: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_on_the_calling_worker_and_a_panic_is_an_error() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(|| std::thread::current().id()).await.unwrap();
        assert_eq!(ran_on, caller, "no hop to the blocking pool");
        let e = run_blocking(|| -> u8 { panic!("disk on fire") })
            .await
            .unwrap_err();
        assert!(e.contains("disk on fire"), "{e}");
    }

    #[tokio::test]
    async fn a_current_thread_runtime_uses_the_blocking_pool() {
        let caller = std::thread::current().id();
        let ran_on = run_blocking(|| std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, caller);
        assert!(run_blocking(|| -> u8 { panic!("x") }).await.is_err());
    }
}
