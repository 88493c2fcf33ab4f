//! `--default-mac gateway`: the MAC of the interface's IPv4 default gateway,
//! from the kernel's routing and neighbour tables, so that one DaemonSet
//! configuration serves balancer nodes behind different next hops.
//!
//! Read from `/proc/thread-self/net/{route,arp}` — the calling thread's
//! network namespace (`/proc/net` would be the process's). When the gateway
//! has no complete neighbour entry yet, an empty UDP datagram to it (discard
//! port) makes the kernel resolve it, and the table is read again for up to
//! [`RESOLVE_FOR`]. IPv4 only: an IPv6-only node must name its MAC.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long to wait for the gateway's neighbour entry.
pub const RESOLVE_FOR: Duration = Duration::from_secs(3);

/// The MAC of `iface`'s IPv4 default gateway.
pub fn default_gateway_mac(iface: &str) -> Result<[u8; 6]> {
    let routes = read("route")?;
    let gateway = default_gateway(&routes, iface).ok_or_else(|| {
        Error::invalid(
            "default_mac",
            format!("gateway: {iface} has no IPv4 default route (name the next hop's MAC instead)"),
        )
    })?;
    let deadline = Instant::now() + RESOLVE_FOR;
    let mut poked = false;
    loop {
        if let Some(mac) = neighbour_mac(&read("arp")?, gateway, iface) {
            return Ok(mac);
        }
        if Instant::now() >= deadline {
            return Err(Error::invalid(
                "default_mac",
                format!("gateway: {iface}'s default gateway {gateway} did not resolve to a MAC within {RESOLVE_FOR:?}"),
            ));
        }
        if !poked {
            // Best effort: any packet to the gateway makes the kernel resolve it.
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| Error::system("bind a UDP socket", e))?;
            let _ = socket.send_to(&[], SocketAddrV4::new(gateway, 9));
            poked = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(table: &str) -> Result<String> {
    let path = format!("/proc/thread-self/net/{table}");
    std::fs::read_to_string(&path).map_err(|e| Error::system(format!("read {path}"), e))
}

/// The gateway of `iface`'s default route in `/proc/net/route` (fields are
/// hexadecimal, addresses in the host's byte order as the kernel prints them).
fn default_gateway(routes: &str, iface: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    routes.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, destination, gateway, flags) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let mask = f.get(7)?;
        let is_default = *destination == "00000000" && *mask == "00000000";
        (*name == iface && is_default && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY)
            .then(|| u32::from_str_radix(gateway, 16).ok())
            .flatten()
            .map(|raw| Ipv4Addr::from(raw.to_ne_bytes()))
    })
}

/// The MAC of a complete entry for `ip` on `iface` in `/proc/net/arp`.
fn neighbour_mac(arp: &str, ip: Ipv4Addr, iface: &str) -> Option<[u8; 6]> {
    const ATF_COM: u32 = 0x2;
    arp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags, mac, device) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & ATF_COM != 0;
        if *device != iface || addr.parse::<Ipv4Addr>().ok()? != ip || !complete {
            return None;
        }
        mac.parse::<weir_crds::mac::Mac>().ok().map(|mac| mac.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0001C80A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0101C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0
";

    const ARP: &str = "IP address       HW type     Flags       HW address            Mask     Device
10.200.1.1       0x1         0x0         00:00:00:00:00:00     *        eth0
10.200.1.1       0x1         0x2         02:00:0a:c8:01:01     *        eth0
192.168.1.1      0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth1
";

    #[test]
    fn default_route_of_the_interface() {
        assert_eq!(default_gateway(ROUTES, "eth0"), Some(Ipv4Addr::new(10, 200, 1, 1)));
        assert_eq!(default_gateway(ROUTES, "eth1"), Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(default_gateway(ROUTES, "eth2"), None);
    }

    #[test]
    fn complete_entry_on_the_interface() {
        let gw = Ipv4Addr::new(10, 200, 1, 1);
        assert_eq!(neighbour_mac(ARP, gw, "eth0"), Some([0x02, 0, 0x0a, 0xc8, 1, 1]));
        assert_eq!(neighbour_mac(ARP, gw, "eth1"), None, "another device's entry does not count");
        assert_eq!(neighbour_mac(&ARP.replace("0x2 ", "0x0 "), gw, "eth0"), None, "incomplete");
    }
}
