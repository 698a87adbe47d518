//! The run's background tasks (console readers, log pumps, the login proxy, ...), started so
//! that a panic in one of them ends the run instead of vanishing.
//!
//! A task spawned with plain `tokio::spawn` that panics only tells whoever awaits its
//! `JoinHandle`; most of a run's tasks are never awaited, so the run would go on without, say,
//! its console reader and fail much later at a step timeout, with nothing saying why. Every task
//! started through [`spawn`] reports its panic (task name and message) to the process's
//! supervisor, which the step loop watches ([`panicked`]); the panic then goes on to the
//! `JoinHandle` as before.
//!
//! `NETBOOT_HARNESS_INJECT_PANIC=<task>` (test-only, read once per run by [`inject_from_env`])
//! makes the named task panic when it starts, so the cleanup tests can prove this path with a
//! real run.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Names the task that should panic, for tests of the panic path; see [`inject_from_env`].
pub const INJECT_PANIC_ENV: &str = "NETBOOT_HARNESS_INJECT_PANIC";

/// A panic in one of the run's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessPanic {
    pub task: String,
    pub message: String,
}

impl std::fmt::Display for HarnessPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "harness task `{}` panicked: {}", self.task, self.message)
    }
}

/// Collects the first panic of the tasks it started.
#[derive(Clone)]
pub struct Supervisor {
    first: watch::Sender<Option<HarnessPanic>>,
    inject: Option<String>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Supervisor {
    /// `inject`: the task name (or the part before its `:`) that panics when it starts.
    pub fn new(inject: Option<String>) -> Supervisor {
        Supervisor {
            first: watch::channel(None).0,
            inject,
        }
    }

    /// Starts `fut` as a task named `name` (e.g. `console:node01`).
    pub fn spawn<F>(&self, name: impl Into<String>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let name = name.into();
        let first = self.first.clone();
        let inject = self.injects(&name);
        tokio::spawn(async move {
            let guarded = CatchUnwind::new(async move {
                if inject {
                    panic!("injected panic ({INJECT_PANIC_ENV})");
                }
                fut.await
            });
            match guarded.await {
                Ok(v) => v,
                Err(payload) => {
                    let p = HarnessPanic {
                        task: name,
                        message: panic_message(payload.as_ref()),
                    };
                    tracing::error!(task = %p.task, message = %p.message, "harness task panicked");
                    first.send_if_modified(|slot| {
                        let new = slot.is_none();
                        if new {
                            *slot = Some(p);
                        }
                        new
                    });
                    // Whoever awaits the handle still learns of it, as with a plain spawn.
                    std::panic::resume_unwind(payload)
                }
            }
        })
    }

    /// Whether the task `name` is the one told to panic.
    pub fn injects(&self, name: &str) -> bool {
        self.inject
            .as_deref()
            .is_some_and(|want| name == want || name.split(':').next() == Some(want))
    }

    /// The first panic so far.
    pub fn first(&self) -> Option<HarnessPanic> {
        self.first.borrow().clone()
    }

    /// Resolves with the first panic, at once if there was one already.
    pub async fn panicked(&self) -> HarnessPanic {
        let mut rx = self.first.subscribe();
        loop {
            if let Some(p) = rx.borrow_and_update().clone() {
                return p;
            }
            if rx.changed().await.is_err() {
                // The sender lives in self, so this does not happen; never resolve if it does.
                std::future::pending::<()>().await;
            }
        }
    }
}

static GLOBAL: OnceLock<Supervisor> = OnceLock::new();

/// The process's supervisor. The lab process runs one run, so one per process is one per run.
pub fn supervisor() -> &'static Supervisor {
    GLOBAL.get_or_init(Supervisor::default)
}

/// Reads [`INJECT_PANIC_ENV`] once, before any task starts. Later calls change nothing.
pub fn inject_from_env() {
    let inject = std::env::var(INJECT_PANIC_ENV)
        .ok()
        .filter(|v| !v.is_empty());
    if let Some(task) = &inject {
        tracing::warn!(%task, "{INJECT_PANIC_ENV} is set: this task will panic (test-only)");
    }
    let _ = GLOBAL.set(Supervisor::new(inject));
}

/// [`Supervisor::spawn`] on the process's supervisor.
pub fn spawn<F>(name: impl Into<String>, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    supervisor().spawn(name, fut)
}

/// [`Supervisor::panicked`] on the process's supervisor.
pub async fn panicked() -> HarnessPanic {
    supervisor().panicked().await
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a text message)".into()
    }
}

/// A future that turns a panic while polling it into an `Err` with the panic's payload.
pub struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub fn new(fut: F) -> Self {
        CatchUnwind {
            inner: Box::pin(fut),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        // The future is dropped after a panic, never polled again, so a broken invariant
        // inside it cannot be observed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_nobody_awaits_is_reported_with_task_and_message() {
        let sup = Supervisor::new(None);
        let _ignored = sup.spawn("pump:dhcp", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("lost the pipe");
        });
        let p = tokio::time::timeout(Duration::from_secs(5), sup.panicked())
            .await
            .expect("the panic is reported");
        assert_eq!(p.task, "pump:dhcp");
        assert_eq!(p.message, "lost the pipe");
    }

    #[tokio::test]
    async fn the_handle_still_sees_the_panic_and_the_first_one_is_kept() {
        let sup = Supervisor::new(None);
        let a = sup.spawn("a", async { panic!("first {}", 1) });
        assert!(a.await.unwrap_err().is_panic());
        let b = sup.spawn("b", async { panic!("second") });
        assert!(b.await.unwrap_err().is_panic());
        assert_eq!(sup.first().map(|p| p.message), Some("first 1".to_string()));
    }

    #[tokio::test]
    async fn tasks_that_end_normally_report_nothing() {
        let sup = Supervisor::new(None);
        assert_eq!(sup.spawn("ok", async { 7 }).await.unwrap(), 7);
        assert!(sup.first().is_none());
        let waited = tokio::time::timeout(Duration::from_millis(50), sup.panicked()).await;
        assert!(waited.is_err(), "no panic, nothing to report");
    }

    #[tokio::test]
    async fn injection_matches_the_name_or_its_kind() {
        let sup = Supervisor::new(Some("console".into()));
        assert!(sup.injects("console:node01"));
        assert!(sup.injects("console"));
        assert!(!sup.injects("consoles"));
        assert!(!sup.injects("qemu-input:node01"));
        let h = sup.spawn("console:node01", async { 1 });
        assert!(h.await.unwrap_err().is_panic());
        let p = sup.first().expect("recorded");
        assert_eq!(p.task, "console:node01");
        assert!(p.message.contains(INJECT_PANIC_ENV), "{}", p.message);
    }
}
