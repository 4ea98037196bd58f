//! LAN discovery with mDNS (mdns-sd): every node publishes `_meshcc._udp.local.` with its
//! NodeId as the instance name and TXT `c` (cluster id: a hash of the secret, never the
//! secret), `v` (protocol version) and `port`, and browses for the others of its cluster.
//!
//! mDNS only suggests addresses: what it finds becomes a [`Suggestion`] for membership, and the
//! pinned handshake decides who actually answers there. Container and VM bridges (docker*,
//! br-*, virbr*, veth*, …) and loopback are left out unless named in
//! `MESHCC_DISCOVERY_INTERFACES`; `MESHCC_DISCOVERY=off` leaves only the seeds.

use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::identity::NodeId;
use super::membership::Suggestion;
use super::proto::PROTOCOL_VERSION;

/// The mDNS service type.
pub const SERVICE: &str = "_meshcc._udp.local.";

/// Interface name prefixes left out by default: container, VM and tunnel bridges.
const IGNORED_PREFIXES: &[&str] = &[
    "lo",
    "docker",
    "br-",
    "virbr",
    "veth",
    "vnet",
    "cni",
    "flannel",
    "cali",
    "weave",
    "vboxnet",
    "vmnet",
    "podman",
    "lxc",
    "lxd",
    "tun",
    "tap",
    "zt",
    "tailscale",
    "wg",
    "ifb",
];

/// Which interfaces mDNS runs on, from `names` (all this host has): the `only` list if given,
/// else every name not in [`IGNORED_PREFIXES`].
pub fn select_interfaces(names: &[String], only: Option<&[String]>) -> Vec<String> {
    names
        .iter()
        .filter(|n| match only {
            Some(only) => only.contains(n),
            None => !IGNORED_PREFIXES.iter().any(|p| n.starts_with(p)),
        })
        .cloned()
        .collect()
}

/// This host's network interface names (Linux: `/sys/class/net`).
fn interface_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What a resolved mDNS instance suggests, if it is a node of this cluster speaking our
/// protocol (untrusted input: anything else is ignored).
pub fn suggestion(
    fullname: &str,
    cluster: &str,
    version: Option<&str>,
    txt_cluster: Option<&str>,
    port: u16,
    ips: &[IpAddr],
) -> Vec<Suggestion> {
    let Some(instance) = fullname.strip_suffix(&format!(".{SERVICE}")) else {
        return Vec::new();
    };
    let Ok(id) = instance.parse::<NodeId>() else {
        return Vec::new();
    };
    if txt_cluster != Some(cluster) || version != Some(&PROTOCOL_VERSION.to_string()) || port == 0 {
        return Vec::new();
    }
    let mut ips: Vec<IpAddr> = ips
        .iter()
        .copied()
        // Link-local IPv6 needs a scope we do not carry; loopback is never another host.
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
            IpAddr::V6(v6) => {
                !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        })
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.into_iter()
        .map(|ip| Suggestion {
            id,
            addr: SocketAddr::new(ip, port),
        })
        .collect()
}

/// A running mDNS publisher and browser; stops on drop.
pub struct Discovery {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Discovery")
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

impl Discovery {
    /// Publishes this node (`id`, UDP `port`) for cluster `cluster` and sends what it finds of
    /// the same cluster to `out`. `interfaces`: only these (else all but bridges and loopback).
    pub fn start(
        id: NodeId,
        port: u16,
        cluster: String,
        interfaces: Option<&[String]>,
        out: mpsc::Sender<Suggestion>,
    ) -> Result<Self, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let chosen = select_interfaces(&interface_names(), interfaces);
        daemon.disable_interface(IfKind::All)?;
        if !chosen.is_empty() {
            daemon.enable_interface(
                chosen
                    .iter()
                    .map(|n| IfKind::Name(n.clone()))
                    .collect::<Vec<_>>(),
            )?;
        }
        info!(interfaces = ?chosen, "mDNS discovery on");
        let name = id.to_string();
        let props = [
            ("c", cluster.clone()),
            ("v", PROTOCOL_VERSION.to_string()),
            ("port", port.to_string()),
        ];
        let info = ServiceInfo::new(
            SERVICE,
            &name,
            &format!("{name}.local."),
            "",
            port,
            &props[..],
        )?
        .enable_addr_auto();
        daemon.register(info)?;
        let events = daemon.browse(SERVICE)?;
        crate::spawn(async move {
            while let Ok(event) = events.recv_async().await {
                let ServiceEvent::ServiceResolved(r) = event else {
                    continue;
                };
                let ips: Vec<IpAddr> = r.addresses.iter().map(|a| a.to_ip_addr()).collect();
                let found = suggestion(
                    &r.fullname,
                    &cluster,
                    r.txt_properties.get_property_val_str("v"),
                    r.txt_properties.get_property_val_str("c"),
                    r.port,
                    &ips,
                );
                for s in found.into_iter().filter(|s| s.id != id) {
                    debug!(node = %s.id.short(), addr = %s.addr, "found by mDNS");
                    if out.send(s).await.is_err() {
                        return;
                    }
                }
            }
            warn!("mDNS browsing ended");
        });
        Ok(Discovery { daemon })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bridges_and_loopback_are_left_out_unless_named() {
        let all = names(&[
            "lo", "eth0", "enp3s0", "wlan0", "docker0", "br-1a2b", "virbr0", "veth12", "tun0",
            "ifb0",
        ]);
        assert_eq!(
            select_interfaces(&all, None),
            names(&["eth0", "enp3s0", "wlan0"])
        );
        let only = names(&["docker0", "eth9"]);
        assert_eq!(select_interfaces(&all, Some(&only)), names(&["docker0"]));
    }

    #[test]
    fn only_nodes_of_this_cluster_and_version_are_suggested() {
        let id = NodeId([5; 32]);
        let full = format!("{id}.{SERVICE}");
        let v = PROTOCOL_VERSION.to_string();
        let ips: Vec<IpAddr> = vec![
            "fe80::1".parse().unwrap(),
            "10.1.2.3".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "fd00::7".parse().unwrap(),
        ];
        let s = suggestion(&full, "abc", Some(&v), Some("abc"), 7471, &ips);
        assert_eq!(
            s.iter().map(|s| s.addr.to_string()).collect::<Vec<_>>(),
            vec!["10.1.2.3:7471", "[fd00::7]:7471"]
        );
        assert!(s.iter().all(|s| s.id == id));
        assert!(suggestion(&full, "abc", Some(&v), Some("other"), 7471, &ips).is_empty());
        assert!(suggestion(&full, "abc", Some("999"), Some("abc"), 7471, &ips).is_empty());
        assert!(suggestion(&full, "abc", Some(&v), None, 7471, &ips).is_empty());
        assert!(suggestion(&full, "abc", Some(&v), Some("abc"), 0, &ips).is_empty());
        let bad = format!("not-a-node-id.{SERVICE}");
        assert!(suggestion(&bad, "abc", Some(&v), Some("abc"), 7471, &ips).is_empty());
        assert!(suggestion(
            "x._other._udp.local.",
            "abc",
            Some(&v),
            Some("abc"),
            7471,
            &ips
        )
        .is_empty());
    }
}
