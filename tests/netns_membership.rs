//! Issue 5's acceptance with real daemons on real hosts (network namespaces,
//! `tests/common/netns.rs`): discovery by mDNS with nothing but the join token, one
//! coordinator, its death and return, a 3/2 partition and its heal, sleeping (SIGSTOP) members,
//! and a renumbered node. Every check polls `meshcc status --json` for an outcome; none times.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::netns::{cluster, Daemon, Lab};
use common::*;
use serde_json::Value;

/// A daemon's `meshcc status --json`, if it answers.
fn status(h: &Home) -> Option<Value> {
    let out = output(&mut h.meshcc(["status", "--json"]));
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The coordinator a status names: (node id, epoch).
fn coordinator(v: &Value) -> Option<(String, u64)> {
    let c = &v["coordinator"];
    Some((c["node_id"].as_str()?.to_owned(), c["epoch"].as_u64()?))
}

/// Ids of the members a status lists in `state`.
fn in_state(v: &Value, state: &str) -> Vec<String> {
    let mut ids: Vec<String> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["state"] == state)
        .filter_map(|m| m["node_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// If every home in `group` sees exactly the others of the group alive, nobody suspect (the
/// rest down), and all name the same coordinator, that coordinator.
fn agreed(homes: &[Home], ids: &[String], group: &[usize]) -> Option<(String, u64)> {
    let mut first = None;
    for &i in group {
        let v = status(&homes[i])?;
        let mut want: Vec<String> = group
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| ids[j].clone())
            .collect();
        want.sort();
        if in_state(&v, "alive") != want || !in_state(&v, "suspect").is_empty() {
            return None;
        }
        let c = coordinator(&v)?;
        match &first {
            None => first = Some(c),
            Some(f) if *f != c => return None,
            Some(_) => {}
        }
    }
    first
}

/// Waits until `group` agrees; returns the coordinator, with the daemons' logs on failure.
fn wait_agreed(
    what: &str,
    homes: &[Home],
    ids: &[String],
    group: &[usize],
    daemons: &[Option<Daemon>],
    accept: impl Fn(&(String, u64)) -> bool,
) -> (String, u64) {
    let deadline = std::time::Instant::now() + POLL_DEADLINE;
    loop {
        if let Some(c) = agreed(homes, ids, group).filter(|c| accept(c)) {
            return c;
        }
        if std::time::Instant::now() > deadline {
            let mut report = String::new();
            for &i in group {
                report += &format!("--- node {i} status ---\n{:?}\n", status(&homes[i]));
                if let Some(d) = &daemons[i] {
                    let log = d.log();
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    report += &format!("--- node {i} log (last lines) ---\n");
                    for l in tail.into_iter().rev() {
                        report += l;
                        report.push('\n');
                    }
                }
            }
            panic!("timed out waiting for: {what}\n{report}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `n` homes in one cluster (only the join token: no seed), daemons started on hosts 1..=n.
fn mesh(lab: &Lab, n: usize) -> (Vec<Home>, Vec<String>, Vec<Option<Daemon>>) {
    let homes: Vec<Home> = (0..n).map(|_| Home::new()).collect();
    let refs: Vec<&Home> = homes.iter().collect();
    let ids = cluster(&refs);
    let daemons = (0..n)
        .map(|i| Some(lab.start_daemon(i + 1, &homes[i])))
        .collect();
    (homes, ids, daemons)
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

#[test]
fn five_nodes_with_only_the_token_find_each_other_and_survive_the_coordinator() {
    let Some(lab) = Lab::new(5) else { return };
    let (homes, ids, mut daemons) = mesh(&lab, 5);
    let first = wait_agreed(
        "five nodes to discover each other by mDNS and agree on a coordinator",
        &homes,
        &ids,
        &all(5),
        &daemons,
        |_| true,
    );
    // Every member is listed at its host's address; no datagram was malformed or dropped.
    let v = status(&homes[0]).expect("status");
    assert_eq!(v["membership"]["malformed"], 0, "{v}");
    assert_eq!(v["membership"]["dropped"], 0, "{v}");
    for m in v["members"].as_array().expect("members") {
        let i = ids
            .iter()
            .position(|id| m["node_id"] == id.as_str())
            .expect("a known member");
        let want = format!("{}:{}", lab.host(i + 1).addr(), common::netns::MESH_PORT);
        assert_eq!(m["addrs"][0], want.as_str(), "{m}");
    }

    // The coordinator dies: the survivors agree on another, with a higher epoch.
    let dead = ids.iter().position(|id| *id == first.0).expect("a member");
    daemons[dead].take().expect("running").kill();
    let survivors: Vec<usize> = all(5).into_iter().filter(|&i| i != dead).collect();
    let second = wait_agreed(
        "the survivors to agree on a new coordinator",
        &homes,
        &ids,
        &survivors,
        &daemons,
        |c| c.0 != first.0,
    );
    assert!(
        second.1 > first.1,
        "epoch went from {first:?} to {second:?}"
    );

    // The old coordinator comes back: it rejoins, and the incumbent stays.
    daemons[dead] = Some(lab.start_daemon(dead + 1, &homes[dead]));
    let third = wait_agreed(
        "all five to agree again after the old coordinator's return",
        &homes,
        &ids,
        &all(5),
        &daemons,
        |_| true,
    );
    assert_eq!(third, second, "the returning node took over");
}

/// Blocks unicast between the hosts of `a` and those of `b` (both ways), or lifts the block.
fn partition(lab: &Lab, a: &[usize], b: &[usize], on: bool) {
    let addrs: Vec<Ipv4Addr> = (1..=lab.len()).map(|i| lab.host(i).addr()).collect();
    for (from, to) in [(a, b), (b, a)] {
        for &i in from {
            for &j in to {
                let verb = if on { "add" } else { "del" };
                let target = format!("{}/32", addrs[j]);
                let mut cmd = lab.host(i + 1).command("ip");
                run(cmd.args(["route", verb, "blackhole", &target]));
            }
        }
    }
}

#[test]
fn a_partition_has_one_coordinator_per_side_and_one_after_healing() {
    let Some(lab) = Lab::new(5) else { return };
    let (homes, ids, daemons) = mesh(&lab, 5);
    wait_agreed(
        "five nodes to agree",
        &homes,
        &ids,
        &all(5),
        &daemons,
        |_| true,
    );
    let (a, b) = ([0, 1, 2], [3, 4]);
    partition(&lab, &a, &b, true);
    let ca = wait_agreed("side A to agree", &homes, &ids, &a, &daemons, |_| true);
    let cb = wait_agreed("side B to agree", &homes, &ids, &b, &daemons, |_| true);
    assert!(a.iter().any(|&i| ids[i] == ca.0), "A follows {ca:?}");
    assert!(b.iter().any(|&i| ids[i] == cb.0), "B follows {cb:?}");
    partition(&lab, &a, &b, false);
    let healed = wait_agreed(
        "exactly one coordinator after healing",
        &homes,
        &ids,
        &all(5),
        &daemons,
        |_| true,
    );
    assert!(
        healed.1 >= ca.1.max(cb.1),
        "{healed:?} after {ca:?} / {cb:?}"
    );
}

/// Coordinators each node has named, in order (repeats collapsed), for the flapping check.
fn record(history: &mut BTreeMap<usize, Vec<(String, u64)>>, homes: &[Home], nodes: &[usize]) {
    for &i in nodes {
        if let Some(c) = status(&homes[i]).as_ref().and_then(coordinator) {
            let h = history.entry(i).or_default();
            if h.last() != Some(&c) {
                h.push(c);
            }
        }
    }
}

#[test]
fn sleeping_members_and_coordinator_cause_no_flapping() {
    let Some(lab) = Lab::new(5) else { return };
    let (homes, ids, daemons) = mesh(&lab, 5);
    let first = wait_agreed(
        "five nodes to agree",
        &homes,
        &ids,
        &all(5),
        &daemons,
        |_| true,
    );
    let coord = ids.iter().position(|id| *id == first.0).expect("a member");
    let member = (coord + 1) % 5;
    let mut history = BTreeMap::new();
    for sleeper in [member, coord] {
        let d = daemons[sleeper].as_ref().expect("running");
        d.stop();
        let awake: Vec<usize> = all(5).into_iter().filter(|&i| i != sleeper).collect();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < until {
            record(&mut history, &homes, &awake);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        d.cont();
        wait_agreed(
            "all five to agree after the sleeper wakes",
            &homes,
            &ids,
            &all(5),
            &daemons,
            |_| true,
        );
        record(&mut history, &homes, &all(5));
    }
    for (i, h) in &history {
        for w in h.windows(2) {
            assert!(w[1].1 >= w[0].1, "node {i}: epoch went back: {h:?}");
        }
        // No flapping: a coordinator once replaced never comes back.
        for (k, c) in h.iter().enumerate() {
            assert!(
                !h[k + 1..]
                    .iter()
                    .any(|later| later.0 == c.0 && later.1 != c.1),
                "node {i} flapped: {h:?}"
            );
        }
    }
    // A sleeping member alone never changed the coordinator; the sleeping coordinator at most
    // once (it was silent for 10 s, longer than its failover).
    let last = wait_agreed("final agreement", &homes, &ids, &all(5), &daemons, |_| true);
    assert!(
        last.1 <= first.1 + 1,
        "{first:?} then {last:?}: {history:?}"
    );
}

#[test]
fn a_renumbered_node_is_seen_at_its_new_address_as_the_same_node() {
    let Some(lab) = Lab::new(3) else { return };
    let (homes, ids, daemons) = mesh(&lab, 3);
    wait_agreed(
        "three nodes to agree",
        &homes,
        &ids,
        &all(3),
        &daemons,
        |_| true,
    );
    let new = lab.net_addr(101);
    lab.renumber(3, new);
    let want = format!("{new}:{}", common::netns::MESH_PORT);
    wait_until("the others to see node 3 alive at its new address", || {
        (0..2).all(|i| {
            status(&homes[i]).is_some_and(|v| {
                v["members"].as_array().into_iter().flatten().any(|m| {
                    m["node_id"] == ids[2].as_str()
                        && m["state"] == "alive"
                        && m["addrs"][0] == want.as_str()
                })
            })
        })
    });
    wait_agreed(
        "three nodes to agree after",
        &homes,
        &ids,
        &all(3),
        &daemons,
        |_| true,
    );
}

#[test]
fn a_coordinator_stopped_gracefully_hands_over_to_its_successor() {
    let Some(lab) = Lab::new(3) else { return };
    let (homes, ids, daemons) = mesh(&lab, 3);
    let first = wait_agreed(
        "three nodes to agree",
        &homes,
        &ids,
        &all(3),
        &daemons,
        |_| true,
    );
    let leaving = ids.iter().position(|id| *id == first.0).expect("a member");
    // `meshcc stop` (like SIGTERM): the coordinator names its successor at epoch + 1 and leaves.
    homes[leaving].stop();
    let rest: Vec<usize> = all(3).into_iter().filter(|&i| i != leaving).collect();
    let next = wait_agreed(
        "the others to follow the successor",
        &homes,
        &ids,
        &rest,
        &daemons,
        |c| c.0 != first.0,
    );
    assert_eq!(next.1, first.1 + 1, "{first:?} then {next:?}");
    let log = daemons[leaving].as_ref().expect("started").log();
    assert!(log.contains("no longer the coordinator"), "{log}");
}
