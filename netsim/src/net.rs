//! The simulated network: hosts with addresses, UDP sockets bound on them, links between them,
//! partitions, multicast groups, and a delivery queue driven by tokio's (virtual) clock.
//!
//! All state sits behind one lock in ordered maps (no hash order anywhere), every random
//! choice comes from the one seeded [`SimRng`], and datagrams due at the same instant are
//! delivered in the order they were sent, so a seed replays the same [`Trace`].
//!
//! Delivery times follow tokio's timer, which has millisecond resolution: a datagram sent with
//! 250 µs latency arrives at the next millisecond tick (the trace records the real arrival).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::link::{Decision, Link};
use crate::rng::SimRng;
use crate::runtime::{HostCtl, SimRuntime};
use crate::socket::SimSocket;
use crate::trace::{Event, Fate, Trace};

/// Datagrams a socket queues before it drops (like a full receive buffer).
pub const SOCKET_QUEUE: usize = 8192;

/// First port handed out for `bind(host, 0)`.
const EPHEMERAL_PORTS: u16 = 49152;

/// A host of the simulated network (an index; stays valid after the host is killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub usize);

/// Misuse of the simulated network by a test; each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetError {
    /// Another live host already has this address.
    AddressInUse(SocketAddr),
    /// The host was killed; revive it first.
    HostDown(HostId),
    /// No such host.
    NoHost(HostId),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::AddressInUse(a) => write!(f, "{a} is in use by a live host or socket"),
            NetError::HostDown(h) => write!(f, "host {} is down; revive it first", h.0),
            NetError::NoHost(h) => write!(f, "no host {}", h.0),
        }
    }
}

impl std::error::Error for NetError {}

struct Host {
    name: String,
    ip: IpAddr,
    alive: bool,
    component: u32,
    ctl: Arc<HostCtl>,
}

struct Sock {
    host: HostId,
    port: u16,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

struct Packet {
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
}

pub(crate) struct State {
    rng: SimRng,
    start: Instant,
    hosts: Vec<Host>,
    bindings: BTreeMap<SocketAddr, u64>,
    sockets: BTreeMap<u64, Sock>,
    next_socket: u64,
    default_link: Link,
    links: BTreeMap<(HostId, HostId), Link>,
    groups: BTreeMap<IpAddr, BTreeSet<u64>>,
    in_flight: BTreeMap<(Instant, u64), Packet>,
    seq: u64,
    trace: Vec<Event>,
    tracing: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

/// A handle on the simulated network (cheap to clone). Make it inside the tokio runtime that
/// runs the simulation: it spawns the delivery task there.
#[derive(Clone)]
pub struct Net {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

impl Net {
    /// An empty network whose randomness all comes from `seed`.
    pub fn new(seed: u64) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rng: SimRng::new(seed),
                start: Instant::now(),
                hosts: Vec::new(),
                bindings: BTreeMap::new(),
                sockets: BTreeMap::new(),
                next_socket: 0,
                default_link: Link::default(),
                links: BTreeMap::new(),
                groups: BTreeMap::new(),
                in_flight: BTreeMap::new(),
                seq: 0,
                trace: Vec::new(),
                tracing: true,
            }),
            notify: Notify::new(),
        });
        tokio::spawn(drive(shared.clone()));
        Self { shared }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held already fails the test; keep going with the state.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Draws from the network's RNG (for anything else of the run that needs randomness, so one
    /// seed covers it all).
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut SimRng) -> T) -> T {
        f(&mut self.lock().rng)
    }

    /// Virtual time since the network was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().start.elapsed()
    }

    /// Adds a live host at `ip`. A dead host's address may be taken; a live one's may not.
    pub fn add_host(&self, name: &str, ip: IpAddr) -> Result<HostId, NetError> {
        let mut s = self.lock();
        if s.hosts.iter().any(|h| h.alive && h.ip == ip) {
            return Err(NetError::AddressInUse(SocketAddr::new(ip, 0)));
        }
        s.hosts.push(Host {
            name: name.to_owned(),
            ip,
            alive: true,
            component: 0,
            ctl: Arc::new(HostCtl::default()),
        });
        Ok(HostId(s.hosts.len() - 1))
    }

    /// The host's current address.
    pub fn ip(&self, host: HostId) -> Result<IpAddr, NetError> {
        Ok(self.lock().host(host)?.ip)
    }

    /// The host's name.
    pub fn name(&self, host: HostId) -> Result<String, NetError> {
        Ok(self.lock().host(host)?.name.clone())
    }

    /// Binds a UDP socket on the host; port 0 picks a free one.
    pub fn bind(&self, host: HostId, port: u16) -> Result<Arc<SimSocket>, NetError> {
        let mut s = self.lock();
        let h = s.host(host)?;
        if !h.alive {
            return Err(NetError::HostDown(host));
        }
        let ip = h.ip;
        let port = match port {
            0 => (EPHEMERAL_PORTS..=u16::MAX)
                .find(|p| !s.bindings.contains_key(&SocketAddr::new(ip, *p)))
                .ok_or(NetError::AddressInUse(SocketAddr::new(ip, 0)))?,
            p => p,
        };
        let addr = SocketAddr::new(ip, port);
        if s.bindings.contains_key(&addr) {
            return Err(NetError::AddressInUse(addr));
        }
        let id = s.next_socket;
        s.next_socket += 1;
        s.bindings.insert(addr, id);
        s.sockets.insert(
            id,
            Sock {
                host,
                port,
                queue: VecDeque::new(),
                waker: None,
            },
        );
        Ok(Arc::new(SimSocket::new(self.clone(), id)))
    }

    /// The quinn runtime for code running on this host: tokio's clock and tasks, with the
    /// host's timers frozen while it sleeps and its tasks aborted when it is killed.
    pub fn runtime(&self, host: HostId) -> Result<Arc<SimRuntime>, NetError> {
        let s = self.lock();
        Ok(Arc::new(SimRuntime::new(s.host(host)?.ctl.clone())))
    }

    /// The link used for datagrams from every host to every other, unless overridden.
    pub fn set_default_link(&self, link: Link) {
        self.lock().default_link = link;
    }

    /// Overrides the link from `a` to `b` (one way).
    pub fn set_link(&self, a: HostId, b: HostId, link: Link) {
        self.lock().links.insert((a, b), link);
    }

    /// Splits the network: hosts in different groups cannot reach each other; hosts named in
    /// no group form one more group of their own.
    pub fn partition(&self, groups: &[&[HostId]]) {
        let mut s = self.lock();
        for h in s.hosts.iter_mut() {
            h.component = 0;
        }
        for (i, g) in groups.iter().enumerate() {
            for h in g.iter() {
                if let Some(host) = s.hosts.get_mut(h.0) {
                    host.component = i as u32 + 1;
                }
            }
        }
    }

    /// Ends every partition.
    pub fn heal(&self) {
        self.partition(&[]);
    }

    /// Moves the host to a new address; its sockets keep their ports and now send from (and
    /// receive at) the new address. Datagrams still in flight to the old one are lost.
    pub fn set_ip(&self, host: HostId, ip: IpAddr) -> Result<(), NetError> {
        let mut s = self.lock();
        let old = s.host(host)?.ip;
        if s.hosts.iter().any(|h| h.alive && h.ip == ip) {
            return Err(NetError::AddressInUse(SocketAddr::new(ip, 0)));
        }
        let moving: Vec<(SocketAddr, u64)> = s
            .bindings
            .iter()
            .filter(|(a, id)| a.ip() == old && s.sockets.get(id).is_some_and(|k| k.host == host))
            .map(|(a, id)| (*a, *id))
            .collect();
        for (a, id) in moving {
            s.bindings.remove(&a);
            s.bindings.insert(SocketAddr::new(ip, a.port()), id);
        }
        if let Some(h) = s.hosts.get_mut(host.0) {
            h.ip = ip;
        }
        Ok(())
    }

    /// Kills the host: its sockets are closed, every task spawned through its runtime is
    /// aborted. Its address is free for another host.
    pub fn kill(&self, host: HostId) -> Result<(), NetError> {
        let ctl = {
            let mut s = self.lock();
            s.host(host)?;
            let ids: Vec<u64> = s
                .sockets
                .iter()
                .filter(|(_, k)| k.host == host)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                s.close_socket(id);
            }
            let h = &mut s.hosts[host.0];
            h.alive = false;
            h.ctl.clone()
        };
        ctl.kill();
        Ok(())
    }

    /// Brings a killed host back at its address, with a fresh runtime (restart the node's
    /// code on it). Fails if a live host took the address meanwhile.
    pub fn revive(&self, host: HostId) -> Result<(), NetError> {
        let mut s = self.lock();
        let ip = s.host(host)?.ip;
        if s.hosts
            .iter()
            .enumerate()
            .any(|(i, h)| i != host.0 && h.alive && h.ip == ip)
        {
            return Err(NetError::AddressInUse(SocketAddr::new(ip, 0)));
        }
        let h = &mut s.hosts[host.0];
        if !h.alive {
            h.alive = true;
            h.ctl = Arc::new(HostCtl::default());
        }
        Ok(())
    }

    /// Puts the host to sleep (a laptop lid closed): nothing leaves it, what arrives is lost,
    /// its runtime's timers do not fire until [`Net::wake`].
    pub fn freeze(&self, host: HostId) -> Result<(), NetError> {
        self.lock().host(host)?.ctl.set_frozen(true);
        Ok(())
    }

    /// Wakes a frozen host: overdue timers fire at once.
    pub fn wake(&self, host: HostId) -> Result<(), NetError> {
        let wakers: Vec<Waker> = {
            let mut s = self.lock();
            s.host(host)?.ctl.set_frozen(false);
            s.sockets
                .values_mut()
                .filter(|k| k.host == host)
                .filter_map(|k| k.waker.take())
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
        Ok(())
    }

    /// Joins the socket to a multicast group: datagrams sent to `group:port` reach every
    /// member socket bound on that port, on every host but the sender's.
    pub fn join_multicast(&self, socket: &SimSocket, group: IpAddr) {
        self.lock()
            .groups
            .entry(group)
            .or_default()
            .insert(socket.id());
    }

    /// Records packet events (on by default); large runs may switch it off to save memory.
    pub fn set_tracing(&self, on: bool) {
        self.lock().tracing = on;
    }

    /// Every packet event so far.
    pub fn trace(&self) -> Trace {
        Trace(self.lock().trace.clone())
    }

    /// Sends one datagram (or one per `segment` bytes of `data`) from a socket.
    pub(crate) fn send(&self, from: u64, dst: SocketAddr, data: &[u8], segment: Option<usize>) {
        let scheduled = {
            let mut s = self.lock();
            let seg = segment.filter(|n| *n > 0).unwrap_or(data.len().max(1));
            let mut any = false;
            for chunk in data.chunks(seg) {
                any |= s.send_one(from, dst, chunk);
            }
            any
        };
        if scheduled {
            self.shared.notify.notify_one();
        }
    }

    /// Takes queued datagrams for a socket, or registers `waker` when none is ready.
    pub(crate) fn recv(
        &self,
        id: u64,
        max: usize,
        waker: &Waker,
    ) -> Option<Vec<(SocketAddr, Vec<u8>)>> {
        let mut s = self.lock();
        let host = s.sockets.get(&id)?.host;
        let frozen = s.hosts.get(host.0).is_some_and(|h| h.ctl.frozen());
        let sock = s.sockets.get_mut(&id)?;
        if frozen || sock.queue.is_empty() {
            sock.waker = Some(waker.clone());
            return None;
        }
        let n = max.min(sock.queue.len());
        Some(sock.queue.drain(..n).collect())
    }

    /// The socket's current address, if it is still open.
    pub(crate) fn socket_addr(&self, id: u64) -> Option<SocketAddr> {
        let s = self.lock();
        let k = s.sockets.get(&id)?;
        Some(SocketAddr::new(s.hosts.get(k.host.0)?.ip, k.port))
    }

    pub(crate) fn close_socket(&self, id: u64) {
        self.lock().close_socket(id);
    }
}

impl State {
    fn host(&self, h: HostId) -> Result<&Host, NetError> {
        self.hosts.get(h.0).ok_or(NetError::NoHost(h))
    }

    fn close_socket(&mut self, id: u64) {
        if let Some(k) = self.sockets.remove(&id) {
            if let Some(ip) = self.hosts.get(k.host.0).map(|h| h.ip) {
                let addr = SocketAddr::new(ip, k.port);
                if self.bindings.get(&addr) == Some(&id) {
                    self.bindings.remove(&addr);
                }
            }
            if let Some(w) = k.waker {
                w.wake();
            }
        }
        for members in self.groups.values_mut() {
            members.remove(&id);
        }
    }

    fn record(&mut self, src: SocketAddr, dst: SocketAddr, size: usize, fate: Fate) {
        if self.tracing {
            self.trace.push(Event {
                at: self.start.elapsed(),
                src,
                dst,
                size,
                fate,
            });
        }
    }

    /// Decides and schedules one datagram; true when something was put in flight.
    fn send_one(&mut self, from: u64, dst: SocketAddr, data: &[u8]) -> bool {
        let Some(sock) = self.sockets.get(&from) else {
            return false;
        };
        let (host, port) = (sock.host, sock.port);
        let Some(h) = self.hosts.get(host.0) else {
            return false;
        };
        let src = SocketAddr::new(h.ip, port);
        let component = h.component;
        if h.ctl.frozen() {
            self.record(src, dst, data.len(), Fate::SenderAsleep);
            return false;
        }
        let targets: Vec<SocketAddr> = if dst.ip().is_multicast() {
            self.groups
                .get(&dst.ip())
                .into_iter()
                .flatten()
                .filter_map(|id| self.sockets.get(id))
                .filter(|k| k.port == dst.port() && k.host != host)
                .filter_map(|k| Some(SocketAddr::new(self.hosts.get(k.host.0)?.ip, k.port)))
                .collect()
        } else {
            vec![dst]
        };
        let mut scheduled = false;
        for to in targets {
            let to_host = self
                .bindings
                .get(&to)
                .and_then(|id| self.sockets.get(id))
                .map(|k| k.host);
            if let Some(th) = to_host {
                if self.hosts.get(th.0).map(|h| h.component) != Some(component) {
                    self.record(src, to, data.len(), Fate::Partitioned);
                    continue;
                }
            }
            let link = to_host
                .and_then(|th| self.links.get(&(host, th)))
                .copied()
                .unwrap_or(self.default_link);
            match link.decide(&mut self.rng) {
                Decision::Lost => self.record(src, to, data.len(), Fate::Lost),
                Decision::Deliver { first, again } => {
                    self.schedule(src, to, data, first, Fate::InFlight(first));
                    if let Some(d) = again {
                        self.schedule(src, to, data, d, Fate::Duplicated(d));
                    }
                    scheduled = true;
                }
            }
        }
        scheduled
    }

    fn schedule(&mut self, src: SocketAddr, dst: SocketAddr, data: &[u8], d: Duration, f: Fate) {
        self.record(src, dst, data.len(), f);
        let seq = self.seq;
        self.seq += 1;
        self.in_flight.insert(
            (Instant::now() + d, seq),
            Packet {
                src,
                dst,
                data: data.to_vec(),
            },
        );
    }

    /// Delivers every datagram due by now; returns when the next one is due.
    fn deliver_due(&mut self, wake: &mut Vec<Waker>) -> Option<Instant> {
        let now = Instant::now();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let p = entry.remove();
            let size = p.data.len();
            let target = self.bindings.get(&p.dst).copied();
            let fate = match target.and_then(|id| self.sockets.get(&id).map(|k| (id, k.host))) {
                None => Fate::NoSocket,
                Some((_, h)) if self.hosts.get(h.0).is_some_and(|h| h.ctl.frozen()) => Fate::Asleep,
                Some((id, _)) => match self.sockets.get_mut(&id) {
                    Some(k) if k.queue.len() < SOCKET_QUEUE => {
                        k.queue.push_back((p.src, p.data));
                        if let Some(w) = k.waker.take() {
                            wake.push(w);
                        }
                        Fate::Delivered
                    }
                    _ => Fate::Overflow,
                },
            };
            self.record(p.src, p.dst, size, fate);
        }
        None
    }
}

/// The delivery task: hands datagrams to their sockets when they are due.
async fn drive(shared: Arc<Shared>) {
    loop {
        let mut wake = Vec::new();
        let next = shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deliver_due(&mut wake);
        wake.into_iter().for_each(Waker::wake);
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = shared.notify.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => shared.notify.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::{AsyncUdpSocket, Runtime};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn two_hosts(net: &Net) -> (HostId, HostId) {
        (
            net.add_host("a", ip("10.0.0.1")).unwrap(),
            net.add_host("b", ip("10.0.0.2")).unwrap(),
        )
    }

    async fn recv_within(s: &SimSocket, d: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        tokio::time::timeout(d, s.recv_from()).await.ok().flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn unicast_arrives_after_the_link_latency() {
        let net = Net::new(1);
        let (a, b) = two_hosts(&net);
        net.set_link(a, b, Link::with_latency(Duration::from_millis(7)));
        let (sa, sb) = (net.bind(a, 1000).unwrap(), net.bind(b, 2000).unwrap());
        let t0 = Instant::now();
        sa.send_to(b"hello", sb.local_addr().unwrap());
        let (data, from) = sb.recv_from().await.unwrap();
        assert_eq!(
            (data.as_slice(), from),
            (&b"hello"[..], sa.local_addr().unwrap())
        );
        assert_eq!(t0.elapsed(), Duration::from_millis(7));
        // Nobody at that port: the datagram vanishes on arrival.
        sa.send_to(b"x", SocketAddr::new(ip("10.0.0.2"), 9));
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fates: Vec<Fate> = net.trace().0.iter().map(|e| e.fate).collect();
        assert_eq!(
            fates,
            vec![
                Fate::InFlight(Duration::from_millis(7)),
                Fate::Delivered,
                Fate::InFlight(Duration::from_micros(250)),
                Fate::NoSocket
            ]
        );
        assert!(matches!(net.bind(a, 1000), Err(NetError::AddressInUse(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn multicast_reaches_every_member_but_the_sender() {
        let net = Net::new(2);
        let group = ip("224.0.0.251");
        let hosts: Vec<HostId> = (1..=4)
            .map(|i| net.add_host("h", ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        let socks: Vec<_> = hosts.iter().map(|h| net.bind(*h, 5353).unwrap()).collect();
        for s in &socks[..3] {
            net.join_multicast(s, group);
        }
        socks[0].send_to(b"who is there", SocketAddr::new(group, 5353));
        for s in &socks[1..3] {
            let (data, from) = recv_within(s, Duration::from_secs(1)).await.unwrap();
            assert_eq!(data, b"who is there");
            assert_eq!(from, socks[0].local_addr().unwrap());
        }
        for s in [&socks[0], &socks[3]] {
            assert!(recv_within(s, Duration::from_secs(1)).await.is_none());
        }
        // Partitioned members do not hear it either.
        net.partition(&[&hosts[..1]]);
        socks[0].send_to(b"again", SocketAddr::new(group, 5353));
        assert!(recv_within(&socks[1], Duration::from_secs(1))
            .await
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_block_until_healed() {
        let net = Net::new(3);
        let (a, b) = two_hosts(&net);
        let (sa, sb) = (net.bind(a, 1).unwrap(), net.bind(b, 1).unwrap());
        let to_b = sb.local_addr().unwrap();
        net.partition(&[&[a], &[b]]);
        sa.send_to(b"1", to_b);
        assert!(recv_within(&sb, Duration::from_secs(1)).await.is_none());
        // A host named in no group is cut off from the named ones too.
        net.partition(&[&[a]]);
        sa.send_to(b"2", to_b);
        assert!(recv_within(&sb, Duration::from_secs(1)).await.is_none());
        net.heal();
        sa.send_to(b"3", to_b);
        assert_eq!(
            recv_within(&sb, Duration::from_secs(1)).await.unwrap().0,
            b"3"
        );
        assert_eq!(net.trace().count(|f| *f == Fate::Partitioned), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_hosts_address_can_be_taken() {
        let net = Net::new(4);
        let (a, b) = two_hosts(&net);
        let (sa, sb) = (net.bind(a, 7).unwrap(), net.bind(b, 7).unwrap());
        let x = sa.local_addr().unwrap();
        assert!(matches!(
            net.add_host("c", x.ip()),
            Err(NetError::AddressInUse(_))
        ));
        let spawned = tokio::spawn(std::future::pending::<()>()).abort_handle();
        let rt = net.runtime(a).unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(Box::pin(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        }));
        net.kill(a).unwrap();
        // The task spawned through the host's runtime is gone (its sender dropped).
        assert!(rx.try_recv().is_err());
        tokio::task::yield_now().await;
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert!(
            !spawned.is_finished(),
            "only the host's own tasks are aborted"
        );
        spawned.abort();
        assert!(sa.local_addr().is_err());
        assert!(matches!(net.bind(a, 8), Err(NetError::HostDown(_))));

        let c = net.add_host("c", x.ip()).unwrap();
        let sc = net.bind(c, 7).unwrap();
        sb.send_to(b"for whoever is at x", x);
        assert_eq!(
            recv_within(&sc, Duration::from_secs(1)).await.unwrap().0,
            b"for whoever is at x"
        );
        // The old host cannot come back while its address is taken.
        assert!(net.revive(a).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn moving_a_host_moves_its_sockets() {
        let net = Net::new(5);
        let (a, b) = two_hosts(&net);
        let (sa, sb) = (net.bind(a, 9).unwrap(), net.bind(b, 9).unwrap());
        let old = sa.local_addr().unwrap();
        net.set_ip(a, ip("10.0.5.5")).unwrap();
        assert_eq!(sa.local_addr().unwrap(), SocketAddr::new(ip("10.0.5.5"), 9));
        assert!(net.set_ip(a, ip("10.0.0.2")).is_err(), "b's address");
        sb.send_to(b"old", old);
        sb.send_to(b"new", sa.local_addr().unwrap());
        assert_eq!(
            recv_within(&sa, Duration::from_secs(1)).await.unwrap().0,
            b"new"
        );
        sa.send_to(b"from new", sb.local_addr().unwrap());
        let (_, from) = recv_within(&sb, Duration::from_secs(1)).await.unwrap();
        assert_eq!(from.ip(), ip("10.0.5.5"));
        assert_eq!(net.trace().count(|f| *f == Fate::NoSocket), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_host_is_deaf_mute_and_its_timers_wait() {
        let net = Net::new(6);
        let (a, b) = two_hosts(&net);
        let (sa, sb) = (net.bind(a, 1).unwrap(), net.bind(b, 1).unwrap());
        let rt = net.runtime(a).unwrap();
        let t0 = Instant::now();
        let mut timer = rt.new_timer((t0 + Duration::from_secs(1)).into_std());
        net.freeze(a).unwrap();
        sa.send_to(b"lost", sb.local_addr().unwrap());
        sb.send_to(b"lost too", sa.local_addr().unwrap());
        let fired = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| timer.as_mut().poll(cx)),
        )
        .await;
        assert!(fired.is_err(), "a frozen host's timer does not fire");
        net.wake(a).unwrap();
        std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(5),
            "it fires at once on waking"
        );
        assert!(recv_within(&sa, Duration::from_secs(1)).await.is_none());
        let t = net.trace();
        assert_eq!(t.count(|f| *f == Fate::SenderAsleep), 1);
        assert_eq!(t.count(|f| *f == Fate::Asleep), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_arrive_twice() {
        let net = Net::new(7);
        let (a, b) = two_hosts(&net);
        net.set_default_link(Link {
            duplicate: 1.0,
            ..Link::default()
        });
        let (sa, sb) = (net.bind(a, 1).unwrap(), net.bind(b, 1).unwrap());
        sa.send_to(b"twice", sb.local_addr().unwrap());
        for _ in 0..2 {
            assert_eq!(
                recv_within(&sb, Duration::from_secs(1)).await.unwrap().0,
                b"twice"
            );
        }
        assert!(recv_within(&sb, Duration::from_secs(1)).await.is_none());
    }
}
