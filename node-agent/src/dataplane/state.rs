//! The Balancer's control-plane model: which VIPs exist, their reals and
//! weights, and the allocation of vip_nums and real indices. The BPF maps hold
//! what the datapath needs; this holds what is needed to recompute it (weights
//! are not in any map). It is saved as JSON beside the pinned datapath so a
//! restarted agent can adopt the datapath with its full configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use weir_ebpf::abi;

use super::config::BalancerConfig;
use super::maglev::HashFunction;
use crate::{Error, Result};

/// A VIP's identity: (address, port, protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct VipId {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
}

impl std::fmt::Display for VipId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::fmt_vip(self.addr, self.port, self.proto))
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Vip {
    pub id: VipId,
    pub vip_num: u32,
    /// Names the VIP in connection-table keys; never reused (see weir_abi.h).
    pub conn_tag: u32,
    pub flags: u32,
    pub hash: HashFunction,
    /// Real address -> weight (0 = drained: keeps its connections, gets no new ones).
    pub reals: BTreeMap<IpAddr, u32>,
    /// Reals of this VIP that are unhealthy: listed and exported with their
    /// weight and flags, their connection-table entries kept, but out of the
    /// ring (unless every real is: [`Vip::fail_open`]). Health is per VIP, as
    /// a check is. A set of the unhealthy ones, so that state files saved
    /// before health existed read as all healthy.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unhealthy: BTreeSet<IpAddr>,
    /// The VIP's health check (`PUT /vips/healthcheck`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

impl Vip {
    /// Every real of the VIP is unhealthy: they all stay in the ring, since
    /// sending to all beats sending to none. A VIP without reals is not.
    pub fn fail_open(&self) -> bool {
        !self.reals.is_empty() && self.reals.keys().all(|a| self.unhealthy.contains(a))
    }

    pub fn is_healthy(&self, addr: &IpAddr) -> bool {
        !self.unhealthy.contains(addr)
    }
}

/// How a VIP's reals are checked (katran-server's current API's object,
/// defaults applied: the stored form, which `GET /vips/healthcheck` shows).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// The port probed: the VIP's unless set (never 0 once stored).
    pub port: u16,
    /// For `http`; kept (unused) whatever the kind, as the reference does.
    pub http: Option<HttpCheck>,
    /// For `https`.
    pub https: Option<HttpCheck>,
    /// For `udp` (weir's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpCheck>,
    pub interval_ms: u32,
    /// Below `interval_ms`.
    pub timeout_ms: u32,
    /// Consecutive successes that make a real healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a real unhealthy.
    pub unhealthy_threshold: u32,
}

/// What a probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP handshake: a listener answers a SYN.
    Tcp,
    /// An HTTP GET whose status must be `expected_status`.
    Http,
    /// The same over TLS.
    Https,
    /// A UDP datagram that gets a reply (weir's addition).
    Udp,
    /// No probe: every real of the VIP is healthy.
    Dummy,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Udp => "udp",
            CheckKind::Dummy => "dummy",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [CheckKind::Tcp, CheckKind::Http, CheckKind::Https, CheckKind::Udp, CheckKind::Dummy]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// An HTTP(S) probe's request and the status it expects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpCheck {
    pub path: String,
    pub expected_status: u16,
    /// The Host header (and, for https, the SNI); the VIP's address when unset.
    pub host: Option<String>,
    /// https only.
    pub skip_tls_verify: bool,
}

/// A UDP probe's datagram and the reply it expects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UdpCheck {
    /// The datagram sent (its UTF-8 bytes).
    pub payload: String,
    /// The reply expected, byte for byte; `None`: any reply passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Real {
    pub addr: IpAddr,
    pub index: u32,
    /// Katran real flags without REAL_F_IPV6 (derived from the address).
    pub flags: u8,
}

/// Everything needed to rebuild the datapath's contents.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct State {
    pub vips: BTreeMap<VipId, Vip>,
    /// Every real in use by at least one VIP, by address.
    pub reals: BTreeMap<IpAddr, Real>,
    pub mac: [u8; 6],
    /// The conn_tag the next VIP gets.
    pub next_conn_tag: u32,
}

/// The on-disk form (JSON maps need string keys, so lists).
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The maps' layout ([`abi::PIN_LAYOUT`]) when saved; 0 when not recorded.
    #[serde(default)]
    layout: u32,
    config: BalancerConfig,
    mac: [u8; 6],
    next_conn_tag: u32,
    vips: Vec<Vip>,
    reals: Vec<Real>,
}

impl State {
    /// How many VIPs use the real at `addr`.
    pub fn real_refs(&self, addr: IpAddr) -> usize {
        self.vips.values().filter(|v| v.reals.contains_key(&addr)).count()
    }

    /// A connection tag no VIP has had since the connection table was new.
    pub fn take_conn_tag(&mut self) -> u32 {
        // 2^32 VIP additions before a wrap; 0 is skipped to keep it "unset".
        let tag = self.next_conn_tag.max(1);
        self.next_conn_tag = tag.wrapping_add(1);
        tag
    }

    /// The lowest vip_num not in use, if any is left below `max_vips`.
    pub fn free_vip_num(&self, max_vips: u32) -> Option<u32> {
        let used: BTreeSet<u32> = self.vips.values().map(|v| v.vip_num).collect();
        (0..max_vips).find(|n| !used.contains(n))
    }

    /// The `count` lowest real indices not in use (1..=max_reals; 0 means "no
    /// real"), found in one pass, or `None` when fewer are free.
    pub fn free_real_indices(&self, max_reals: u32, count: usize) -> Option<Vec<u32>> {
        let used: BTreeSet<u32> = self.reals.values().map(|r| r.index).collect();
        let free: Vec<u32> = (1..=max_reals).filter(|n| !used.contains(n)).take(count).collect();
        (free.len() == count).then_some(free)
    }

    pub fn save(&self, config: &BalancerConfig, path: &Path) -> Result<()> {
        let saved = Saved {
            layout: abi::PIN_LAYOUT,
            config: config.clone(),
            mac: self.mac,
            next_conn_tag: self.next_conn_tag,
            vips: self.vips.values().cloned().collect(),
            reals: self.reals.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&saved).expect("state serializes");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::system(format!("create {}", dir.display()), e))?;
        }
        // Write then rename, so a crash never leaves half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(|e| Error::system(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::system(format!("rename to {}", path.display()), e))
    }

    /// Loads a saved state and the map layout it was saved with; `Ok(None)`
    /// when there is none. The saved configuration must shape the maps as
    /// `config` does.
    /// `pin_dir` is the pinned datapath's directory, for the error message.
    pub fn load(config: &BalancerConfig, path: &Path, pin_dir: &Path) -> Result<Option<(Self, u32)>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::system(format!("read {}", path.display()), e)),
        };
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid("state file", format!("{}: {e}", path.display())))?;
        let shape = |c: &BalancerConfig| (c.max_vips, c.max_reals, c.ch_ring_size, c.lru_size, c.mtu);
        if shape(&saved.config) != shape(config) {
            return Err(Error::invalid(
                "config",
                format!(
                    "the pinned datapath was created with max_vips={} max_reals={} ch_ring_size={} \
                     lru_size={} mtu={}; start with the same values, or remove the pinned datapath \
                     (stop with cleanup_on_shutdown, or delete both its pin directory {} and {}: \
                     the pinned maps keep their old sizes)",
                    saved.config.max_vips,
                    saved.config.max_reals,
                    saved.config.ch_ring_size,
                    saved.config.lru_size,
                    saved.config.mtu,
                    pin_dir.display(),
                    path.display()
                ),
            ));
        }
        let state = Self {
            vips: saved.vips.into_iter().map(|v| (v.id, v)).collect(),
            reals: saved.reals.into_iter().map(|r| (r.addr, r)).collect(),
            mac: saved.mac,
            next_conn_tag: saved.next_conn_tag,
        };
        Ok(Some((state, saved.layout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(unhealthy: &[IpAddr], health_check: Option<HealthCheck>) -> Vip {
        let id = VipId { addr: "10.100.0.1".parse().unwrap(), port: 80, proto: 6 };
        let reals = ["10.0.0.1", "10.0.0.2"].iter().map(|a| (a.parse().unwrap(), 1)).collect();
        Vip {
            id,
            vip_num: 0,
            conn_tag: 1,
            flags: 0,
            hash: HashFunction::Maglev,
            reals,
            unhealthy: unhealthy.iter().copied().collect(),
            health_check,
        }
    }

    fn state_of(v: Vip) -> State {
        let reals =
            v.reals.keys().enumerate().map(|(i, &addr)| (addr, Real { addr, index: i as u32 + 1, flags: 0 })).collect();
        State { vips: [(v.id, v)].into(), reals, mac: [2, 0, 0, 0, 0, 1], next_conn_tag: 2 }
    }

    #[test]
    fn health_and_checks_survive_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("weir-state-health-{}", std::process::id()));
        let path = dir.join("lo.json");
        let check = HealthCheck {
            kind: CheckKind::Http,
            port: 8080,
            http: Some(HttpCheck {
                path: "/healthz".into(),
                expected_status: 204,
                host: Some("web".into()),
                skip_tls_verify: false,
            }),
            https: None,
            udp: Some(UdpCheck { payload: "ping".into(), expect: None }),
            interval_ms: 1000,
            timeout_ms: 500,
            healthy_threshold: 2,
            unhealthy_threshold: 4,
        };
        let v = vip(&["10.0.0.2".parse().unwrap()], Some(check));
        let config = BalancerConfig::testing();
        let state = state_of(v);
        state.save(&config, &path).unwrap();
        let (loaded, _) = State::load(&config, &path, &dir).unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded, state);
        assert!(!loaded.vips.values().next().unwrap().fail_open());
    }

    #[test]
    fn a_state_file_from_before_health_reads_as_all_healthy() {
        let dir = std::env::temp_dir().join(format!("weir-state-old-{}", std::process::id()));
        let path = dir.join("lo.json");
        let config = BalancerConfig::testing();
        let state = state_of(vip(&[], None));
        state.save(&config, &path).unwrap();
        // What such a file holds: no `unhealthy`, no `health_check`.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("unhealthy") && !text.contains("health_check"), "{text}");
        let (loaded, _) = State::load(&config, &path, &dir).unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let vip = loaded.vips.values().next().unwrap();
        assert!(vip.reals.keys().all(|a| vip.is_healthy(a)) && vip.health_check.is_none());
    }
}
