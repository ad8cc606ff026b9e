//! Work that must finish even when whoever waits for it goes away: a Bastion
//! session created or deleted half-way would be left on the Bastion, counting
//! against its limits, with nobody holding its token.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio_util::task::TaskTracker;

/// A request that must run to completion: polled in place by its caller, and
/// handed to `tracker` if the caller drops it before it is done.
pub struct FinishOnDrop<T: Send + 'static> {
    request: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    tracker: TaskTracker,
}

impl<T: Send + 'static> FinishOnDrop<T> {
    pub fn new(request: impl Future<Output = T> + Send + 'static, tracker: &TaskTracker) -> Self {
        FinishOnDrop {
            request: Some(Box::pin(request)),
            tracker: tracker.clone(),
        }
    }
}

impl<T: Send + 'static> Future for FinishOnDrop<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let request = self
            .request
            .as_mut()
            .expect("FinishOnDrop polled after completion");
        let output = ready!(request.as_mut().poll(cx));
        self.request = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for FinishOnDrop<T> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            finish_detached(&self.tracker, "finish a request", async move {
                drop(request.await);
            });
        }
    }
}

/// Runs `work` to its end on `tracker` from a `Drop`, where nothing can be
/// awaited; `what` names it in the warning when the runtime is already gone.
pub fn finish_detached(
    tracker: &TaskTracker,
    what: &str,
    work: impl Future<Output = ()> + Send + 'static,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            tracker.spawn_on(work, &runtime);
        }
        Err(_) => tracing::warn!("no runtime left to {what}"),
    }
}
