//! Background commands of one MCP session. A job is a sandboxed command the
//! call did not wait for: a task owns it and waits for it (with its
//! timeout), and `terminal_get_status` hands out what it printed since the
//! last look. Jobs belong to the session that started them: when the
//! session ends (its table is dropped) or the server shuts down (the
//! table's token is a child of the server's), every job still running is
//! stopped like a timed-out command, and the server waits for that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::output::CapturedText;
use super::process::{Ended, SharedStreams, Spawned, take_streams};

/// Finished jobs kept for their last `terminal_get_status`, per session.
const KEEP_FINISHED: usize = 32;

/// A background command.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub command: String,
    pub cwd: String,
    pub network: bool,
    pub timeout: Duration,
    pub started: Instant,
    streams: SharedStreams,
    ended: Mutex<Option<Ended>>,
    /// The end has been handed out by a status call.
    collected: Mutex<bool>,
}

/// A job as one status call sees it: its state and the output since the last call.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub job: Arc<Job>,
    pub ended: Option<Ended>,
    pub stdout: CapturedText,
    pub stderr: CapturedText,
    pub elapsed: Duration,
}

/// The jobs of one session.
#[derive(Debug)]
pub struct JobTable {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    cancel: CancellationToken,
    next: AtomicU64,
}

impl JobTable {
    /// `cancel` ends every job (pass a child of the server's shutdown token).
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            jobs: Mutex::new(BTreeMap::new()),
            cancel,
            next: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Jobs still running.
    pub fn running(&self) -> usize {
        self.lock()
            .values()
            .filter(|j| j.ended.lock().map(|e| e.is_none()).unwrap_or(false))
            .count()
    }

    /// Take over `spawned`: a task on `tracker` waits for it until `timeout`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        spawned: Spawned,
        command: String,
        cwd: String,
        network: bool,
        timeout: Duration,
        grace: Duration,
        tracker: &TaskTracker,
    ) -> Arc<Job> {
        let id = format!("job-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let job = Arc::new(Job {
            id: id.clone(),
            command,
            cwd,
            network,
            timeout,
            started: spawned.started(),
            streams: spawned.streams(),
            ended: Mutex::new(None),
            collected: Mutex::new(false),
        });
        {
            let mut jobs = self.lock();
            // Forget finished jobs whose end was already handed out, oldest first.
            let mut finished: Vec<String> = jobs
                .iter()
                .filter(|(_, j)| *j.collected.lock().unwrap_or_else(|p| p.into_inner()))
                .map(|(k, _)| k.clone())
                .collect();
            let excess = finished.len().saturating_sub(KEEP_FINISHED - 1);
            finished.truncate(excess);
            for k in finished {
                jobs.remove(&k);
            }
            jobs.insert(id, job.clone());
        }
        let deadline = tokio::time::Instant::from_std(job.started) + timeout;
        let cancel = self.cancel.clone();
        let task_job = job.clone();
        tracker.spawn(async move {
            let ended = spawned
                .wait(deadline, grace, cancel.cancelled_owned(), &mut |_, _| {})
                .await;
            *task_job.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(ended);
        });
        job
    }

    /// The job's state and its output since the last call; `None` for an
    /// id this session does not have.
    pub fn status(&self, id: &str) -> Option<JobStatus> {
        let job = self.lock().get(id).cloned()?;
        // The end first: once it is set, all the output is in the streams.
        let ended = job.ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (stdout, stderr) = take_streams(&job.streams);
        let elapsed = match &ended {
            Some(e) => e.duration,
            None => job.started.elapsed(),
        };
        if ended.is_some() {
            *job.collected.lock().unwrap_or_else(|p| p.into_inner()) = true;
        }
        Some(JobStatus {
            job,
            ended,
            stdout,
            stderr,
            elapsed,
        })
    }

    /// Stop every job (they end as cancelled).
    pub fn stop_all(&self) {
        self.cancel.cancel();
    }
}

impl Drop for JobTable {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
