//! Distributed compilation across real daemons in network namespaces (issue 6 acceptance):
//! a 3-host build byte-identical to a local one with jobs on every host; workers SIGKILLed before
//! and during the build; the coordinator killed mid-build; a worker with another gcc never
//! chosen; local-only options never sent. Real gcc, real make, the Lua sources.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::netns::*;
use common::*;

const OUTPUTS: &[&str] = &[".o"];

/// `n` homes in one cluster, each with `slots` (the first with `client_slots`), discovery on
/// (mDNS stays inside the lab's namespaces).
fn homes(n: usize, client_slots: u32, slots: u32) -> Vec<Home> {
    let mut hs: Vec<Home> = (0..n).map(|_| Home::new()).collect();
    for (i, h) in hs.iter_mut().enumerate() {
        h.set_env(
            "MESHCC_SLOTS",
            if i == 0 { client_slots } else { slots }.to_string(),
        );
    }
    let refs: Vec<&Home> = hs.iter().collect();
    cluster(&refs);
    hs
}

/// Waits until `home`'s daemon sees `n` other members alive with worker slots.
fn wait_for_workers(home: &Home, n: usize) {
    wait_until(&format!("{n} workers in the view"), || {
        let out = output(&mut home.meshcc(["status", "--json"]));
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        s["members"].as_array().is_some_and(|m| {
            m.iter()
                .filter(|m| m["state"] == "alive" && m["slots_total"].as_u64().unwrap_or(0) > 0)
                .count()
                >= n
        })
    });
}

/// Copies Lua into `home.work/lua`, builds it directly with gcc (the reference, moved aside).
fn project(home: &Home) -> (std::path::PathBuf, std::path::PathBuf, u64) {
    let dir = home.work.join("lua");
    let n = copy_lua(&dir).len() as u64;
    write_makefile(&dir, "-O2 -g0");
    make(home, &dir, 4, "gcc");
    let reference = home.root().join("direct");
    move_outputs(&dir, &reference, OUTPUTS);
    (dir, reference, n)
}

/// `make -j12 CC="meshcc gcc"` inside host 1, started (not waited for).
fn start_build(lab: &Lab, home: &Home, dir: &Path) -> Child {
    let mut cmd = home.command("make");
    in_dir(&mut cmd, dir)
        .args(["-j12", "-s"])
        .arg(format!("CC={}", meshcc_cc("gcc")));
    lab.host(1)
        .enter(&mut cmd)
        .spawn()
        .expect("cannot start make")
}

fn finish(build: Child, home: &Home) {
    let out = build.wait_with_output().expect("make");
    assert!(
        out.status.success(),
        "the build failed:\n{}\n--- client log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        home.log()
    );
}

fn served(home: &Home) -> u64 {
    home.stats()["served_jobs"].as_u64().unwrap_or(0)
}

#[test]
fn three_hosts_build_identical_objects_with_jobs_on_all_three() {
    let Some(lab) = Lab::new(3) else { return };
    let hs = homes(3, 2, 2);
    let _d: Vec<Daemon> = (0..3).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    wait_for_workers(&hs[0], 2);
    let (dir, reference, n) = project(&hs[0]);
    finish(start_build(&lab, &hs[0], &dir), &hs[0]);
    let built = hs[0].root().join("mesh");
    move_outputs(&dir, &built, OUTPUTS);
    compare_trees(&reference, &built);
    let s = hs[0].stats();
    assert_eq!(s["local_fallbacks"], 0, "{s}");
    assert_eq!(
        s["local_compiles"].as_u64().unwrap() + s["remote_compiles"].as_u64().unwrap(),
        n,
        "{s}"
    );
    assert!(s["local_compiles"].as_u64().unwrap() > 0, "{s}");
    for h in &hs[1..] {
        assert!(served(h) > 0, "a worker ran nothing: {s}");
    }
}

#[test]
fn two_of_three_workers_killed_before_the_build_cost_no_fallback() {
    let Some(lab) = Lab::new(4) else { return };
    let hs = homes(4, 0, 2);
    let mut d: Vec<Daemon> = (0..4).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    wait_for_workers(&hs[0], 3);
    let (dir, reference, n) = project(&hs[0]);
    // The autoscaler takes two workers away; the build starts at once.
    d[1].kill();
    d[2].kill();
    finish(start_build(&lab, &hs[0], &dir), &hs[0]);
    let built = hs[0].root().join("mesh");
    move_outputs(&dir, &built, OUTPUTS);
    compare_trees(&reference, &built);
    let s = hs[0].stats();
    assert_eq!(s["local_fallbacks"], 0, "{s}");
    assert_eq!(s["remote_compiles"].as_u64(), Some(n), "{s}");
    assert_eq!(served(&hs[3]), n);
}

#[test]
fn a_worker_killed_mid_build_costs_no_fallback() {
    let Some(lab) = Lab::new(3) else { return };
    let hs = homes(3, 0, 2);
    let mut d: Vec<Daemon> = (0..3).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    wait_for_workers(&hs[0], 2);
    let (dir, reference, _) = project(&hs[0]);
    let build = start_build(&lab, &hs[0], &dir);
    wait_until("host 2 to run jobs", || served(&hs[1]) > 0);
    d[1].kill();
    finish(build, &hs[0]);
    let built = hs[0].root().join("mesh");
    move_outputs(&dir, &built, OUTPUTS);
    compare_trees(&reference, &built);
    let s = hs[0].stats();
    assert_eq!(s["local_fallbacks"], 0, "{s}");
}

#[test]
fn a_worker_with_another_gcc_never_receives_jobs_nor_local_only_options() {
    let Some(lab) = Lab::new(3) else { return };
    let mut hs = homes(3, 0, 2);
    // Host 3's only compiler is a wrapper script: another toolchain identity.
    let bin = hs[2].root().join("othergcc");
    std::fs::create_dir_all(&bin).unwrap();
    write(
        &bin,
        "gcc",
        "#!/bin/sh\nPATH=/usr/bin:/bin exec /usr/bin/gcc \"$@\"\n",
    );
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("gcc"))
        .status()
        .unwrap();
    hs[2].set_env("MESHCC_PATH", &bin);
    let _d: Vec<Daemon> = (0..3).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    wait_for_workers(&hs[0], 2);
    let (dir, reference, n) = project(&hs[0]);
    finish(start_build(&lab, &hs[0], &dir), &hs[0]);
    let built = hs[0].root().join("mesh");
    move_outputs(&dir, &built, OUTPUTS);
    compare_trees(&reference, &built);
    assert_eq!(served(&hs[2]), 0);
    assert_eq!(served(&hs[1]), n);
    // Local-only options compile on the client, never on a worker.
    let before = served(&hs[1]);
    for opt in [
        "-march=native",
        "-fprofile-arcs",
        "-ftest-coverage",
        "-fstack-usage",
    ] {
        let mut cmd = hs[0].meshcc(["gcc", "-O2", opt, "-c", "lapi.c", "-o", "lapi.o"]);
        in_dir(&mut cmd, &dir);
        run(lab.host(1).enter(&mut cmd));
    }
    assert_eq!(served(&hs[1]), before);
    assert_eq!(served(&hs[2]), 0);
}

/// The coordinator `home`'s daemon follows, once all agree on one.
fn coordinator(hs: &[Home]) -> String {
    let mut agreed = String::new();
    wait_until("every node to follow the same coordinator", || {
        let ids: Vec<String> = hs
            .iter()
            .map(|h| {
                let out = output(&mut h.meshcc(["status", "--json"]));
                let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                s["coordinator"]["node_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        agreed = ids[0].clone();
        !agreed.is_empty() && ids.iter().all(|i| *i == agreed)
    });
    agreed
}

#[test]
fn the_coordinator_killed_mid_build_costs_no_fallback() {
    let Some(lab) = Lab::new(4) else { return };
    let hs = homes(4, 2, 2);
    let ids: Vec<String> = hs.iter().map(node_id).collect();
    let mut d: Vec<Daemon> = (0..4).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    let coord = coordinator(&hs);
    let c = ids
        .iter()
        .position(|i| *i == coord)
        .expect("the coordinator is a member");
    // Build from a host that is not the coordinator.
    let client = (0..4).find(|i| *i != c).unwrap_or(0);
    wait_for_workers(&hs[client], 3);
    let (dir, reference, n) = project(&hs[client]);
    let mut cmd = hs[client].command("make");
    in_dir(&mut cmd, &dir)
        .args(["-j12", "-s"])
        .arg(format!("CC={}", meshcc_cc("gcc")));
    let build = lab.host(client + 1).enter(&mut cmd).spawn().expect("make");
    wait_until("remote jobs under way", || {
        hs[client].stats()["remote_compiles"].as_u64().unwrap_or(0) > 0
    });
    d[c].kill();
    finish(build, &hs[client]);
    let built = hs[client].root().join("mesh");
    move_outputs(&dir, &built, OUTPUTS);
    compare_trees(&reference, &built);
    let s = hs[client].stats();
    assert_eq!(s["local_fallbacks"], 0, "{s}");
    assert_eq!(
        s["local_compiles"].as_u64().unwrap() + s["remote_compiles"].as_u64().unwrap(),
        n,
        "{s}"
    );
}

#[test]
fn the_clients_address_changing_mid_build_retries_nothing() {
    let Some(lab) = Lab::new(3) else { return };
    let mut hs = homes(3, 0, 2);
    hs[0].set_env("MESHCC_LOG", "meshcc=debug");
    let d: Vec<Daemon> = (0..3).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    wait_for_workers(&hs[0], 2);
    let (dir, reference, _) = project(&hs[0]);
    let build = start_build(&lab, &hs[0], &dir);
    wait_until("remote jobs under way", || {
        hs[0].stats()["remote_compiles"].as_u64().unwrap_or(0) > 0
    });
    lab.renumber(1, lab.net_addr(201));
    finish(build, &hs[0]);
    let built = hs[0].root().join("mesh");
    move_outputs(&dir, &built, OUTPUTS);
    compare_trees(&reference, &built);
    let s = hs[0].stats();
    assert_eq!(
        s["local_fallbacks"],
        0,
        "{s}\n--- client log ---\n{}",
        d[0].log()
    );
    assert_eq!(s["retries"], 0, "{s}");
}

/// Slots in use on member `id` as `home`'s view shows them.
fn busy_in_view(home: &Home, id: &str) -> Option<u64> {
    let out = output(&mut home.meshcc(["status", "--json"]));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    s["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == id)?["slots_busy"]
        .as_u64()
}

#[test]
fn a_client_killed_mid_build_leaves_no_slot_taken() {
    let Some(lab) = Lab::new(3) else { return };
    let hs = homes(3, 0, 2);
    let ids: Vec<String> = hs.iter().map(node_id).collect();
    let mut d: Vec<Daemon> = (0..3).map(|i| lab.start_daemon(i + 1, &hs[i])).collect();
    wait_for_workers(&hs[0], 2);
    let (dir, _, _) = project(&hs[0]);
    let mut build = start_build(&lab, &hs[0], &dir);
    wait_until("both workers busy, as host 3 sees host 2", || {
        served(&hs[1]) + served(&hs[2]) > 0 && busy_in_view(&hs[2], &ids[1]).unwrap_or(0) > 0
    });
    d[0].kill();
    let killed = std::time::Instant::now();
    let _ = build.kill();
    let _ = build.wait();
    wait_until("host 2's slots free again, as host 3 sees them", || {
        busy_in_view(&hs[2], &ids[1]) == Some(0)
    });
    eprintln!(
        "slots of host 2 seen free by host 3 {:?} after the client was killed",
        killed.elapsed()
    );
}
