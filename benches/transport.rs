//! Mesh transport benchmark (issue 3): request round trip and bulk throughput over meshcc's
//! QUIC transport on loopback, next to a plain TCP baseline (tokio `TcpStream`) in the same run.
//!
//! `cargo bench --bench transport` (release build). Tunables: `PINGS` (round trips, default
//! 5000), `BULK_MIB` (bytes per upload, default 256), `UPLOADS` (default 4). Method and figures:
//! `docs/benchmarks.md`, section "Mesh transport". Loopback only: no traffic leaves the host.

use std::net::SocketAddr;
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

/// Median and 99th percentile of round trips, in µs.
fn summary(mut rtts: Vec<Duration>) -> (f64, f64) {
    rtts.sort();
    let at = |q: f64| {
        let i = ((rtts.len() as f64 - 1.0) * q).round() as usize;
        rtts[i].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

struct Figures {
    median_us: f64,
    p99_us: f64,
    mib_s: f64,
}

async fn mesh(pings: usize, data: &[u8], uploads: usize) -> anyhow::Result<Figures> {
    let secret = ClusterSecret::generate()?;
    let config = || TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..TransportConfig::default()
    };
    let server = Mesh::bind(config(), Arc::new(NodeKey::generate()?), secret.clone())?;
    let client = Mesh::bind(config(), Arc::new(NodeKey::generate()?), secret)?;
    let at = server
        .local_addr()
        .ok_or_else(|| anyhow::anyhow!("no address"))?;
    let conn = client.connect(server.id(), at).await?;
    for _ in 0..pings / 10 {
        client.ping(&conn).await?;
    }
    let mut rtts = Vec::with_capacity(pings);
    for _ in 0..pings {
        rtts.push(client.ping(&conn).await?);
    }
    let want = *blake3::hash(data).as_bytes();
    let start = Instant::now();
    for _ in 0..uploads {
        anyhow::ensure!(client.upload(&conn, data).await? == want, "digest mismatch");
    }
    let secs = start.elapsed().as_secs_f64();
    client.close().await;
    server.close().await;
    let (median_us, p99_us) = summary(rtts);
    Ok(Figures {
        median_us,
        p99_us,
        mib_s: (data.len() * uploads) as f64 / (1 << 20) as f64 / secs,
    })
}

/// The TCP baseline's server: `P` + 8 bytes is echoed; `U` + length + bytes is hashed with
/// BLAKE3 (as the mesh's upload is) and answered with the digest.
async fn tcp_serve(mut s: TcpStream) -> std::io::Result<()> {
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

async fn tcp(pings: usize, data: &[u8], uploads: usize) -> anyhow::Result<Figures> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let _ = tcp_serve(s).await;
        }
    });
    let mut s = TcpStream::connect(at).await?;
    s.set_nodelay(true)?;
    let ping = async |s: &mut TcpStream, n: u64| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut req = [b'P'; 9];
        req[1..].copy_from_slice(&n.to_le_bytes());
        s.write_all(&req).await?;
        let mut back = [0u8; 8];
        s.read_exact(&mut back).await?;
        anyhow::ensure!(back == n.to_le_bytes(), "wrong echo");
        Ok(start.elapsed())
    };
    for i in 0..pings / 10 {
        ping(&mut s, i as u64).await?;
    }
    let mut rtts = Vec::with_capacity(pings);
    for i in 0..pings {
        rtts.push(ping(&mut s, i as u64).await?);
    }
    let want = *blake3::hash(data).as_bytes();
    let start = Instant::now();
    for _ in 0..uploads {
        let mut req = [b'U'; 9];
        req[1..].copy_from_slice(&(data.len() as u64).to_le_bytes());
        s.write_all(&req).await?;
        for chunk in data.chunks(64 << 10) {
            s.write_all(chunk).await?;
        }
        let mut digest = [0u8; 32];
        s.read_exact(&mut digest).await?;
        anyhow::ensure!(digest == want, "digest mismatch");
    }
    let secs = start.elapsed().as_secs_f64();
    drop(s);
    let _ = server.await;
    let (median_us, p99_us) = summary(rtts);
    Ok(Figures {
        median_us,
        p99_us,
        mib_s: (data.len() * uploads) as f64 / (1 << 20) as f64 / secs,
    })
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and wants it quick.
    let full = std::env::args().any(|a| a == "--bench");
    let pings = env_or("PINGS", if full { 5000 } else { 50 });
    let mib = env_or("BULK_MIB", if full { 256 } else { 4 });
    let uploads = env_or("UPLOADS", if full { 4 } else { 1 });
    let mut data = vec![0u8; mib << 20];
    meshcc::mesh::proto::pattern(1, 0, &mut data);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (m, t) = runtime.block_on(async {
        // TCP first, then the mesh: each alone on the machine.
        let t = tcp(pings, &data, uploads).await?;
        let m = mesh(pings, &data, uploads).await?;
        anyhow::Ok((m, t))
    })?;
    println!(
        "mesh transport on loopback: {pings} round trips, {uploads} x {mib} MiB uploads (BLAKE3 at the receiver)"
    );
    println!(
        "{:<24} {:>12} {:>12} {:>8}",
        "", "meshcc QUIC", "plain TCP", "ratio"
    );
    let row = |name: &str, a: f64, b: f64| {
        println!("{name:<24} {a:>12.1} {b:>12.1} {:>8.2}", a / b);
    };
    row("round trip median (µs)", m.median_us, t.median_us);
    row("round trip p99 (µs)", m.p99_us, t.p99_us);
    row("upload (MiB/s)", m.mib_s, t.mib_s);
    Ok(())
}
