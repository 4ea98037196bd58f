//! The namespace lab itself (`netsim/ns/lab.sh`, `tests/common/netns.rs`): five hosts with
//! multicast between all of them (what mDNS needs), and nothing left behind: not after a test
//! panics, not after `lab.sh up` is interrupted, and `down` may run twice.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{
    cluster, lab_script, namespaces_of, probe, unique_name, unsupported, Lab, MESH_PORT,
};
use common::*;

const HOSTS: usize = 5;
/// The groups every host sends to and listens on, on the mDNS port: mDNS over IPv4 (link-local:
/// always flooded), an organisation-local IPv4 group (flooded only with multicast snooping off)
/// and mDNS over IPv6 (on `eth0`).
const GROUPS: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251)),
    IpAddr::V4(Ipv4Addr::new(239, 255, 77, 77)),
    IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb)),
];
const PORT: u16 = 5353;
const PROBE_SELF: &str = "MESHCC_TEST_MCAST_SELF";
const PROBE_HOSTS: &str = "MESHCC_TEST_MCAST_HOSTS";

#[test]
fn five_hosts_reach_each_other_by_multicast() {
    let Some(lab) = Lab::new(HOSTS) else { return };
    let mut children = Vec::new();
    for i in 1..=HOSTS {
        let mut cmd = probe("multicast_probe");
        cmd.env(PROBE_SELF, i.to_string())
            .env(PROBE_HOSTS, HOSTS.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = lab
            .host(i)
            .enter(&mut cmd)
            .spawn()
            .expect("start a multicast probe");
        children.push((i, child));
    }
    for (i, child) in children {
        let out = child.wait_with_output().expect("wait for a probe");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the multicast probe in host {i} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One message: `<sender> <group index> <how many (host, group) pairs the sender heard>`.
fn parse(msg: &[u8]) -> Option<(usize, usize, usize)> {
    let s = std::str::from_utf8(msg).ok()?;
    let mut it = s.split(' ').map(|w| w.parse::<usize>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Run by [`five_hosts_reach_each_other_by_multicast`] inside each host: sends to every group
/// and listens until it has heard every other host on every group and every other host says
/// it heard everyone too (so nobody stops sending before the others have heard it).
#[test]
#[ignore = "run inside a lab host by five_hosts_reach_each_other_by_multicast"]
fn multicast_probe() {
    let me: usize = std::env::var(PROBE_SELF)
        .expect("run by five_hosts_reach_each_other_by_multicast")
        .parse()
        .expect("host number");
    let n: usize = std::env::var(PROBE_HOSTS)
        .expect("host count")
        .parse()
        .expect("host count");
    use socket2::{Domain, Protocol, Socket, Type};
    // SAFETY: a NUL-terminated constant name.
    let eth0 = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
    assert_ne!(eth0, 0, "no eth0 in the lab host");
    let open = |v6: bool| -> UdpSocket {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        let any: SocketAddr = if v6 {
            let _ = s.set_only_v6(true);
            (Ipv6Addr::UNSPECIFIED, PORT).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, PORT).into()
        };
        s.bind(&any.into()).expect("bind the mDNS port");
        s.set_nonblocking(true).expect("non-blocking");
        s.into()
    };
    let (v4, v6) = (open(false), open(true));
    let mut dests = Vec::new();
    for g in GROUPS {
        match g {
            IpAddr::V4(g) => {
                v4.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED)
                    .unwrap_or_else(|e| panic!("join {g}: {e}"));
                dests.push((&v4, SocketAddr::from((g, PORT))));
            }
            IpAddr::V6(g) => {
                v6.join_multicast_v6(&g, eth0)
                    .unwrap_or_else(|e| panic!("join {g}: {e}"));
                dests.push((&v6, SocketAddrV6::new(g, PORT, 0, eth0).into()));
            }
        }
    }
    let everyone = (n - 1) * GROUPS.len();
    let mut heard = BTreeSet::new();
    let mut done = BTreeSet::new();
    let mut full_sent = 0;
    let deadline = Instant::now() + POLL_DEADLINE;
    let mut buf = [0u8; 512];
    while full_sent < 3 || done.len() < n - 1 {
        assert!(
            Instant::now() < deadline,
            "host {me}: heard only {heard:?}, finished {done:?}"
        );
        for (gi, (sock, dest)) in dests.iter().enumerate() {
            let msg = format!("{me} {gi} {}", heard.len());
            sock.send_to(msg.as_bytes(), dest)
                .unwrap_or_else(|e| panic!("send to {dest}: {e}"));
        }
        if heard.len() == everyone {
            full_sent += 1;
        }
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            let mut got = false;
            for sock in [&v4, &v6] {
                let Ok((len, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                got = true;
                if let Some((from, gi, count)) = parse(&buf[..len]) {
                    if from != me && (1..=n).contains(&from) && gi < GROUPS.len() {
                        heard.insert((from, gi));
                        if count == everyone {
                            done.insert(from);
                        }
                    }
                }
            }
            if !got {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    println!("host {me} heard {heard:?}");
}

/// A test that panics half-way still leaves no namespace and no process behind.
#[test]
fn a_panicking_test_leaves_nothing() {
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new(2).expect("supported");
        let sleeper = lab
            .host(2)
            .command("sleep")
            .arg("600")
            .spawn()
            .expect("start a process in host 2");
        seen = Some((lab.name().to_owned(), sleeper));
        assert_eq!(namespaces_of(lab.name()).len(), 3, "switch and two hosts");
        panic!("deliberate failure in the middle of a lab test");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let (name, mut sleeper) = seen.expect("the lab was made");
    assert_eq!(
        namespaces_of(&name),
        Vec::<String>::new(),
        "namespaces left"
    );
    wait_until("the process inside the lab to be killed", || {
        matches!(sleeper.try_wait(), Ok(Some(_)))
    });
    // `down` again (the lab is gone): still fine.
    run(Command::new(lab_script()).args(["down", &name]));
}

/// `lab.sh up` interrupted half-way removes what it made.
#[test]
fn an_interrupted_up_leaves_nothing() {
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let name = unique_name();
    let mut up = Command::new(lab_script())
        .args(["up", &name, "4"])
        .env("MESHCC_LAB_HOLD", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lab.sh up");
    wait_until("lab.sh up to make host 2", || {
        namespaces_of(&name).contains(&format!("{name}-h2"))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal lab.sh");
    let status = up.wait().expect("wait for lab.sh");
    assert!(!status.success(), "an interrupted up must fail");
    assert_eq!(
        namespaces_of(&name),
        Vec::<String>::new(),
        "namespaces left"
    );
}

/// `cut`/`heal` and a stopped (SIGSTOP) daemon: a ping from another host fails while host 1 is
/// unplugged or its daemon is stopped, and works again after `heal` and `cont`.
#[test]
fn cut_heal_stop_and_cont() {
    let Some(lab) = Lab::new(2) else { return };
    let (a, b) = (Home::new(), Home::new());
    let ids = cluster(&[&a, &b]);
    let target = format!("{}@{}:{MESH_PORT}", ids[0], lab.host(1).addr());
    let ping = || output(lab.host(2).enter(&mut b.meshcc(["ping", &target])));
    let daemon = lab.start_daemon(1, &a);
    let works = |what: &str| {
        let out = ping();
        assert!(
            out.status.success(),
            "{what}: ping failed:\n{}{}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
    };
    let fails = |what: &str| assert!(!ping().status.success(), "{what}: ping succeeded");
    works("at the start");
    lab.cut(1);
    fails("host 1 unplugged");
    lab.heal(1);
    works("host 1 plugged back in");
    daemon.stop();
    fails("daemon stopped");
    daemon.cont();
    works("daemon continued");
}
