//! The quinn [`Runtime`] of a simulated host: tokio's clock (virtual under paused time) and
//! tokio's tasks, tied to the host so that killing it aborts them and freezing it stops its
//! timers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime};
use tokio::task::AbortHandle;
use tokio::time::Sleep;

/// The per-host switches the runtime and the network share.
#[derive(Debug, Default)]
pub(crate) struct HostCtl {
    frozen: AtomicBool,
    killed: AtomicBool,
    timers: Mutex<Vec<Waker>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl HostCtl {
    pub(crate) fn frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }

    pub(crate) fn set_frozen(&self, on: bool) {
        self.frozen.store(on, Ordering::Relaxed);
        if !on {
            let wakers = std::mem::take(&mut *lock(&self.timers));
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// Aborts every task spawned on the host, and every one spawned later.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut *lock(&self.tasks)) {
            t.abort();
        }
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let handle = tokio::spawn(future).abort_handle();
        if self.killed.load(Ordering::Relaxed) {
            handle.abort();
            return;
        }
        let mut tasks = lock(&self.tasks);
        // Forget finished tasks now and then, so the list stays as long as the live ones.
        if tasks.len() >= 64 && tasks.len().is_power_of_two() {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(handle);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// quinn's runtime on a simulated host (see the module docs).
#[derive(Debug)]
pub struct SimRuntime {
    ctl: Arc<HostCtl>,
}

impl SimRuntime {
    pub(crate) fn new(ctl: Arc<HostCtl>) -> Self {
        Self { ctl }
    }
}

impl Runtime for SimRuntime {
    fn new_timer(&self, i: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(SimTimer {
            sleep: Box::pin(tokio::time::sleep_until(i.into())),
            ctl: self.ctl.clone(),
        })
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.ctl.spawn(future);
    }

    fn wrap_udp_socket(&self, _: std::net::UdpSocket) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "a simulated host has no real sockets: bind one with Net::bind",
        ))
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A tokio sleep that does not fire while its host is frozen.
#[derive(Debug)]
struct SimTimer {
    sleep: Pin<Box<Sleep>>,
    ctl: Arc<HostCtl>,
}

impl AsyncTimer for SimTimer {
    fn reset(mut self: Pin<&mut Self>, i: Instant) {
        Sleep::reset(self.sleep.as_mut(), i.into());
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<()> {
        if self.ctl.frozen() {
            lock(&self.ctl.timers).push(cx.waker().clone());
            return Poll::Pending;
        }
        Future::poll(self.sleep.as_mut(), cx)
    }
}
