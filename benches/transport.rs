//! Mesh transport benchmark (issue 3): request round trip and bulk throughput over meshcc's
//! QUIC transport, next to a plain TCP baseline (tokio `TcpStream`) in the same run: on
//! loopback, then (as root, with iproute2) between two hosts of a namespace lab
//! (`netsim/ns/lab.sh`: veth pairs on a bridge, the path a LAN packet takes through a kernel).
//!
//! `cargo bench --bench transport` (release build). The two transports take turns, round after
//! round, so a burst of load elsewhere on the machine hits both. Tunables: `ROUNDS` (default 5),
//! `PINGS` (round trips per round, default 2000), `BULK_MIB` (upload size, default 256; one
//! upload per round). Method and figures: `docs/benchmarks.md`, section "Mesh transport".
//! Loopback and the lab only: no traffic leaves the host.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshcc::mesh::cluster::ClusterSecret;
use meshcc::mesh::identity::NodeKey;
use meshcc::mesh::transport::{Mesh, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where one end's sockets are made: an address, and a lab host's network namespace if any.
struct End {
    ip: IpAddr,
    netns: Option<String>,
}

impl End {
    fn loopback() -> Self {
        Self {
            ip: IpAddr::from([127, 0, 0, 1]),
            netns: None,
        }
    }

    /// Runs `f` (which makes a socket) in this end's namespace: on a thread of its own that
    /// enters it (a socket stays in the namespace it was made in).
    fn make<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let Some(ns) = self.netns.clone() else {
            return f();
        };
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
            // SAFETY: setns on this thread only, with a descriptor that stays open meanwhile.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| std::io::Error::other("the socket thread panicked"))?
    }
}

/// A two-host namespace lab made with `netsim/ns/lab.sh`, removed when dropped. Named like the
/// tests' labs (`mc<pid>x<k>`), so a killed run's lab is removed by the next test.
struct Lab(String);

impl Lab {
    fn script() -> std::process::Command {
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/netsim/ns/lab.sh"))
    }

    fn up() -> Result<Self, String> {
        if !nix::unistd::getuid().is_root() {
            return Err("network namespaces need root".into());
        }
        let lab = Self(format!("mc{}x1000", std::process::id()));
        match Self::script().args(["up", &lab.0, "2"]).output() {
            Ok(o) if o.status.success() => Ok(lab),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            Err(e) => Err(format!("cannot run lab.sh: {e}")),
        }
    }

    fn end(&self, i: usize) -> anyhow::Result<End> {
        let out = Self::script()
            .args(["addr", &self.0, &i.to_string()])
            .output()?;
        let ip = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        Ok(End {
            ip,
            netns: Some(format!("{}-h{i}", self.0)),
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Self::script().args(["down", &self.0]).status();
    }
}

/// One side of the comparison: a connection that can ping and upload.
trait Link {
    async fn ping(&mut self, n: u64) -> anyhow::Result<()>;
    async fn upload(&mut self, data: &[u8]) -> anyhow::Result<[u8; 32]>;
}

/// Two mesh nodes and the connection between them.
struct MeshLink {
    client: Arc<Mesh>,
    server: Arc<Mesh>,
    conn: quinn::Connection,
}

impl MeshLink {
    async fn new(server: &End, client: &End) -> anyhow::Result<Self> {
        let secret = ClusterSecret::generate()?;
        let node = |end: &End, secret: ClusterSecret| -> anyhow::Result<Arc<Mesh>> {
            let ip = end.ip;
            let socket = end.make(move || {
                use socket2::{Domain, Protocol, Socket, Type};
                let at = SocketAddr::new(ip, 0);
                let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
                // As the daemon's endpoint (`Mesh::bind`): 4 MiB buffers.
                s.set_recv_buffer_size(4 << 20)?;
                s.set_send_buffer_size(4 << 20)?;
                s.set_nonblocking(true)?;
                s.bind(&at.into())?;
                Ok(std::net::UdpSocket::from(s))
            })?;
            let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
            let socket = runtime.wrap_udp_socket(socket)?;
            let config = TransportConfig {
                listen: SocketAddr::new(ip, 0),
                ..TransportConfig::default()
            };
            let key = Arc::new(NodeKey::generate()?);
            Ok(Mesh::with_socket(
                config, key, secret, socket, runtime, true,
            )?)
        };
        let server = node(server, secret.clone())?;
        let client = node(client, secret)?;
        let at = server
            .local_addr()
            .ok_or_else(|| anyhow::anyhow!("the server has no address"))?;
        let conn = client.connect(server.id(), at).await?;
        Ok(Self {
            client,
            server,
            conn,
        })
    }

    async fn close(self) {
        self.client.close().await;
        self.server.close().await;
    }
}

impl Link for MeshLink {
    async fn ping(&mut self, _: u64) -> anyhow::Result<()> {
        self.client.ping(&self.conn).await?;
        Ok(())
    }

    async fn upload(&mut self, data: &[u8]) -> anyhow::Result<[u8; 32]> {
        Ok(self.client.upload(&self.conn, data).await?)
    }
}

/// The TCP baseline: one connection with `TCP_NODELAY`; `P` + 8 bytes is echoed,
/// `U` + length + bytes is hashed with BLAKE3 (as the mesh's upload is), the digest answered.
struct TcpLink {
    stream: TcpStream,
    server: tokio::task::JoinHandle<()>,
}

impl TcpLink {
    async fn new(server: &End, client: &End) -> anyhow::Result<Self> {
        let ip = server.ip;
        let listener = server.make(move || std::net::TcpListener::bind((ip, 0)))?;
        let at = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let server = tokio::spawn(async move {
            if let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                let _ = Self::serve(s).await;
            }
        });
        let stream = client.make(move || std::net::TcpStream::connect(at))?;
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, server })
    }

    async fn serve(mut s: TcpStream) -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let mut kind = [0u8; 1];
            if s.read_exact(&mut kind).await.is_err() {
                return Ok(());
            }
            let mut word = [0u8; 8];
            s.read_exact(&mut word).await?;
            if kind[0] == b'P' {
                s.write_all(&word).await?;
                continue;
            }
            let mut left = u64::from_le_bytes(word);
            let mut h = blake3::Hasher::new();
            while left > 0 {
                let want = (left as usize).min(buf.len());
                let n = s.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                h.update(&buf[..n]);
                left -= n as u64;
            }
            s.write_all(h.finalize().as_bytes()).await?;
        }
    }

    async fn close(self) {
        drop(self.stream);
        let _ = self.server.await;
    }
}

impl Link for TcpLink {
    async fn ping(&mut self, n: u64) -> anyhow::Result<()> {
        let mut req = [b'P'; 9];
        req[1..].copy_from_slice(&n.to_le_bytes());
        self.stream.write_all(&req).await?;
        let mut back = [0u8; 8];
        self.stream.read_exact(&mut back).await?;
        anyhow::ensure!(back == n.to_le_bytes(), "wrong echo");
        Ok(())
    }

    async fn upload(&mut self, data: &[u8]) -> anyhow::Result<[u8; 32]> {
        let mut req = [b'U'; 9];
        req[1..].copy_from_slice(&(data.len() as u64).to_le_bytes());
        self.stream.write_all(&req).await?;
        for chunk in data.chunks(64 << 10) {
            self.stream.write_all(chunk).await?;
        }
        let mut digest = [0u8; 32];
        self.stream.read_exact(&mut digest).await?;
        Ok(digest)
    }
}

/// What one transport measured over all rounds.
#[derive(Default)]
struct Figures {
    rtts: Vec<Duration>,
    round_medians_us: Vec<f64>,
    mib_s: Vec<f64>,
}

impl Figures {
    /// One round: `pings` round trips (timed one by one) and one upload (checked).
    async fn round(
        &mut self,
        link: &mut impl Link,
        pings: usize,
        data: &[u8],
    ) -> anyhow::Result<()> {
        let mut rtts = Vec::with_capacity(pings);
        for i in 0..pings {
            let start = Instant::now();
            link.ping(i as u64).await?;
            rtts.push(start.elapsed());
        }
        rtts.sort();
        self.round_medians_us.push(us(rtts[rtts.len() / 2]));
        self.rtts.extend(rtts);
        let start = Instant::now();
        let digest = link.upload(data).await?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(digest == *blake3::hash(data).as_bytes(), "digest mismatch");
        self.mib_s
            .push(data.len() as f64 / f64::from(1 << 20) / secs);
        Ok(())
    }

    /// Median of the round medians, p99 of every round trip, median upload rate.
    fn summary(&self) -> (f64, f64, f64) {
        let mut rtts = self.rtts.clone();
        rtts.sort();
        let p99 = rtts[((rtts.len() - 1) as f64 * 0.99).round() as usize];
        (
            median(&mut self.round_medians_us.clone()),
            us(p99),
            median(&mut self.mib_s.clone()),
        )
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants it quick.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = env_or("ROUNDS", if full { 5 } else { 1 }).max(1);
    let pings = env_or("PINGS", if full { 2000 } else { 50 }).max(1);
    let mib = env_or("BULK_MIB", if full { 256 } else { 4 }).max(1);
    let mut data = vec![0u8; mib << 20];
    meshcc::mesh::proto::pattern(1, 0, &mut data);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let how = format!(
        "{rounds} rounds of {pings} round trips and one {mib} MiB upload (BLAKE3 at the \
         receiver), TCP and QUIC taking turns"
    );
    let (m, t) = runtime.block_on(compare(
        &End::loopback(),
        &End::loopback(),
        rounds,
        pings,
        &data,
    ))?;
    report(&format!("mesh transport on loopback: {how}"), &m, &t);
    match Lab::up() {
        Ok(lab) => {
            let (server, client) = (lab.end(2)?, lab.end(1)?);
            let (m, t) = runtime.block_on(compare(&server, &client, rounds, pings, &data))?;
            report(
                &format!(
                    "mesh transport between two lab hosts ({} -> {}, veth + bridge): {how}",
                    client.ip, server.ip
                ),
                &m,
                &t,
            );
        }
        Err(why) => println!("\nlab comparison skipped: {why}"),
    }
    Ok(())
}

/// Warms both links up, then runs the rounds, TCP and QUIC taking turns.
async fn compare(
    server: &End,
    client: &End,
    rounds: usize,
    pings: usize,
    data: &[u8],
) -> anyhow::Result<(Figures, Figures)> {
    let mut mesh = MeshLink::new(server, client).await?;
    let mut tcp = TcpLink::new(server, client).await?;
    let warm = &data[..data.len().min(1 << 20)];
    Figures::default()
        .round(&mut mesh, pings / 10 + 1, warm)
        .await?;
    Figures::default()
        .round(&mut tcp, pings / 10 + 1, warm)
        .await?;
    let (mut m, mut t) = (Figures::default(), Figures::default());
    for _ in 0..rounds {
        t.round(&mut tcp, pings, data).await?;
        m.round(&mut mesh, pings, data).await?;
    }
    mesh.close().await;
    tcp.close().await;
    Ok((m, t))
}

fn report(title: &str, m: &Figures, t: &Figures) {
    println!("\n{title}");
    println!(
        "{:<30} {:>12} {:>12} {:>8}",
        "", "meshcc QUIC", "plain TCP", "ratio"
    );
    let (mm, mp, mu) = m.summary();
    let (tm, tp, tu) = t.summary();
    let row =
        |name: &str, a: f64, b: f64| println!("{name:<30} {a:>12.1} {b:>12.1} {:>8.2}", a / b);
    row("round trip, median (µs)", mm, tm);
    row("round trip, p99 (µs)", mp, tp);
    row("upload, median (MiB/s)", mu, tu);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("per round, mesh median µs: {}", list(&m.round_medians_us));
    println!("per round, TCP  median µs: {}", list(&t.round_medians_us));
    println!("per round, mesh MiB/s:     {}", list(&m.mib_s));
    println!("per round, TCP  MiB/s:     {}", list(&t.mib_s));
}
