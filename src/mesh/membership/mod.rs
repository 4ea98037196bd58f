//! Membership: who is in the mesh, what each member offers, and who coordinates.
//!
//! [`core`] is the sans-IO state machine (foca SWIM + election + advert table); this module is
//! its thin async shell: it feeds the core the datagrams the [`Mesh`] receives, address
//! suggestions (seeds, mDNS) and this node's advert, sleeps on tokio time until the core's
//! next deadline, sends what the core emits (dialling a member on demand at the address in its
//! identity, from a spawned task so a dead peer never blocks the loop), and publishes the view.
//! No globals: a process may run many (the network simulator does).

pub mod codec;
pub mod core;
pub mod identity;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use self::core::{Core, Counters, Outgoing, Settings};
use self::identity::Ident;
use super::identity::NodeId;
use super::transport::Mesh;
use super::view::ViewHandles;

/// "Node `id` may be reachable at `addr`": from the seeds file or from mDNS. A hint only: the
/// pinned handshake decides who answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suggestion {
    /// The node.
    pub id: NodeId,
    /// Where.
    pub addr: SocketAddr,
}

/// Who this node is, for membership.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// This start's counter (persisted, bumped on each daemon start).
    pub boot: u64,
    /// When this start began (Unix milliseconds): the membership age.
    pub joined: u64,
}

/// How often this node checks which address it is reached at (renumbering).
const ADDR_CHECK: Duration = Duration::from_millis(500);

enum Command {
    Leave(oneshot::Sender<()>),
}

/// A running membership layer; dropping it stops the task without a goodbye (use
/// [`Membership::leave`] for a graceful one).
#[derive(Debug)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    counters: watch::Receiver<Counters>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Membership {
    /// Starts membership on `mesh`: takes its datagrams, reads this node's advert from
    /// `views.advert`, and publishes to `views.view`.
    pub fn start(
        mesh: Arc<Mesh>,
        views: ViewHandles,
        settings: Settings,
        start: Start,
        suggestions: mpsc::Receiver<Suggestion>,
    ) -> Self {
        let (commands, rx) = mpsc::channel(4);
        let (counters_tx, counters) = watch::channel(Counters::default());
        let task = crate::spawn(run(
            mesh,
            views,
            settings,
            start,
            suggestions,
            rx,
            counters_tx,
        ));
        Membership {
            commands,
            task,
            counters,
        }
    }

    /// What the core dropped or did so far.
    pub fn counters(&self) -> Counters {
        *self.counters.borrow()
    }

    /// Leaves gracefully: a coordinator hands over, members are told, then the task ends.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// The address peers should dial this node at: the listen address if it names an IP, else
/// the local IP the kernel would use toward `toward` (no packet is sent).
fn own_addr(listen: SocketAddr, toward: SocketAddr) -> Option<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return Some(listen);
    }
    let bind: IpAddr = if toward.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind((bind, 0)).ok()?;
    s.connect(toward).ok()?;
    Some(SocketAddr::new(s.local_addr().ok()?.ip(), listen.port()))
}

/// The address the endpoint is bound to now (a simulated host's, or a daemon's given IP, may
/// change; `0.0.0.0` stays).
fn listen(mesh: &Mesh) -> SocketAddr {
    mesh.local_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Tells the core this node's address; if it changed, the connections peers dialed to the old
/// one are closed so that they are dialed again from the new one.
fn set_addr(mesh: &Mesh, core: &mut Core, addr: SocketAddr, now: u64) {
    if core.set_addr(addr, now) {
        mesh.address_changed();
    }
}

async fn run(
    mesh: Arc<Mesh>,
    views: ViewHandles,
    settings: Settings,
    start: Start,
    mut suggestions: mpsc::Receiver<Suggestion>,
    mut commands: mpsc::Receiver<Command>,
    counters: watch::Sender<Counters>,
) {
    let epoch = Instant::now();
    let now = move || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut advert_rx = views.advert.subscribe();
    let advert = advert_rx.borrow_and_update().clone();
    let me = Ident {
        id: mesh.id(),
        addr: listen(&mesh),
        boot: start.boot,
        bump: 0,
        joined: start.joined,
        class: advert.class,
    };
    let mut core = Core::new(me, advert, settings, now());
    let mut datagrams = mesh.datagrams();
    let dialing = Arc::new(Mutex::new(HashSet::new()));
    let mut last_hint: Option<SocketAddr> = None;
    let mut addr_check = tokio::time::interval(ADDR_CHECK);
    loop {
        flush(&mesh, &mut core, &dialing);
        if let Some(s) = core.take_snapshot() {
            views.view.send_replace(s);
        }
        counters.send_if_modified(|c| std::mem::replace(c, core.counters()) != *c);
        let deadline = core
            .next_deadline()
            .map(|d| epoch + Duration::from_millis(d))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some((from, data)) = datagrams.recv() => core.datagram(from, &data, now()),
            Some(s) = suggestions.recv() => {
                last_hint = Some(s.addr);
                if let Some(a) = own_addr(listen(&mesh), s.addr) {
                    set_addr(&mesh, &mut core, a, now());
                }
                core.suggest(s.id, s.addr, now());
            }
            Ok(()) = advert_rx.changed() => {
                let a = advert_rx.borrow_and_update().clone();
                core.set_advert(a, now());
            }
            _ = tokio::time::sleep_until(deadline) => core.poll(now()),
            _ = addr_check.tick() => {
                // Renumbering: the route toward a live member (or the last hint) names our IP.
                let toward = views
                    .view
                    .borrow()
                    .members
                    .iter()
                    .find(|m| m.state != super::election::MemberState::Down)
                    .and_then(|m| m.addrs.first().copied())
                    .filter(|a| !a.ip().is_unspecified())
                    .or(last_hint);
                if let Some(a) = toward.and_then(|t| own_addr(listen(&mesh), t)) {
                    set_addr(&mesh, &mut core, a, now());
                }
            }
            cmd = commands.recv() => {
                core.leave(now());
                flush(&mesh, &mut core, &dialing);
                if let Some(s) = core.take_snapshot() {
                    views.view.send_replace(s);
                }
                // Let the goodbye datagrams leave before the endpoint closes.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(Command::Leave(done)) = cmd {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

/// Sends the core's datagrams: on the live connection, or after dialling the member from a
/// spawned task (one dial per member at a time; datagrams for a member being dialled are
/// dropped, as SWIM expects of a lossy network).
fn flush(mesh: &Arc<Mesh>, core: &mut Core, dialing: &Arc<Mutex<HashSet<NodeId>>>) {
    for Outgoing { to, addr, data } in core.take_outgoing() {
        let data = Bytes::from(data);
        if let Some(conn) = mesh.connection(&to) {
            if let Err(e) = conn.send_datagram(data) {
                debug!(peer = %to.short(), "datagram not sent: {e}");
            }
            continue;
        }
        let Some(addr) = addr.filter(|a| !a.ip().is_unspecified()) else {
            continue;
        };
        {
            let Ok(mut d) = dialing.lock() else { continue };
            if !d.insert(to) {
                continue;
            }
        }
        let mesh = mesh.clone();
        let dialing = dialing.clone();
        crate::spawn(async move {
            match mesh.connect(to, addr).await {
                Ok(conn) => {
                    if let Err(e) = conn.send_datagram(data) {
                        debug!(peer = %to.short(), "datagram not sent: {e}");
                    }
                }
                Err(e) => debug!(peer = %to.short(), %addr, "cannot reach member: {e}"),
            }
            if let Ok(mut d) = dialing.lock() {
                d.remove(&to);
            }
        });
    }
}
