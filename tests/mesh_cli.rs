//! `meshcc init/join/id/ping/status` end to end, with a real daemon on loopback (127.0.0.1).

mod common;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshcc");

fn meshcc(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("MESHCC_HOME", home)
        .env_remove("MESHCC_LISTEN")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Daemon(Child, std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = meshcc(&self.1, &["stop"]);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn init_join_ping_status() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let port = common::free_udp_port();

    let out = meshcc(&a, &["init", "--advertise", &format!("127.0.0.1:{port}")]);
    assert!(out.status.success(), "{}", text(&out));
    let token = text(&out)
        .split_whitespace()
        .find(|w| w.starts_with("meshcc1:"))
        .unwrap()
        .to_string();
    let id_a = text(&meshcc(&a, &["id"])).trim().to_string();
    let id_c = text(&meshcc(&c, &["id"])).trim().to_string();
    assert_eq!(id_a.len(), 52);

    let daemon = Daemon(
        Command::new(BIN)
            .arg("daemon")
            .env("MESHCC_HOME", &a)
            .env("MESHCC_LISTEN", format!("127.0.0.1:{port}"))
            .env("MESHCC_DISCOVERY", "off")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        a.clone(),
    );
    let mut up = false;
    for _ in 0..100 {
        let s = text(&meshcc(&a, &["status", "--json"]));
        if s.contains(&format!("127.0.0.1:{port}")) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "daemon A never listened");

    let out = meshcc(&b, &["join", &token]);
    assert!(out.status.success(), "{}", text(&out));
    let target = format!("{id_a}@127.0.0.1:{port}");
    let out = meshcc(&b, &["ping", &target]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pong"), "{}", text(&out));

    // Wrong id at that address: non-zero, and the message names both ids.
    let out = meshcc(&b, &["ping", &format!("{id_c}@127.0.0.1:{port}")]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains(&id_a) && t.contains(&id_c), "{t}");

    // No cluster secret: refuses to try.
    let out = meshcc(&c, &["ping", &target]);
    assert!(!out.status.success());
    assert!(text(&out).contains("meshcc join"), "{}", text(&out));

    let out = meshcc(&a, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["node_id"], id_a.as_str());
    assert!(v["members"].is_array());
    drop(daemon);
}
