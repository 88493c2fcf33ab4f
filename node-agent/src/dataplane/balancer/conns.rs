//! The connection table (deleting and purging entries) and the questions
//! asked of the program about flows (test runs, real-for-flow).

use std::net::IpAddr;

use weir_abi::{Protocol, VipFlags};
use weir_ebpf::abi::{self, ConnKey};

use super::lifecycle::{program, program_named};
use super::{monotonic_coarse_ns, Balancer};
use crate::dataplane::flow::{self, Flow, Simulated};
use crate::dataplane::maps::ConnTable;
use crate::dataplane::state::VipId;
use crate::{Error, Result};

/// A VIP's connection-table entries, listed for [`Balancer::purge_conns`].
pub struct ConnPurge {
    id: VipId,
    tag: u32,
    table: ConnTable,
}

impl ConnPurge {
    /// The VIP's entries now: a walk of the whole table (no lock needed). An
    /// entry the datapath evicts during the walk may make the kernel restart
    /// it; a key listed twice is deleted (and counted) once.
    pub fn keys(&self) -> Vec<ConnKey> {
        self.table.keys_tagged(self.tag)
    }
}

impl Balancer {
    /// Deletes the connection-table entry of the flow from `src:src_port` to
    /// VIP `id`. Returns whether there was one.
    pub fn delete_conn(&mut self, id: &VipId, src: IpAddr, src_port: u16) -> Result<bool> {
        let vip = self.vip(id)?;
        if src.is_ipv6() != id.addr.is_ipv6() {
            return Err(Error::bad_address("src_ip", format!("{src} is not of the VIP's address family")));
        }
        let port_hash = VipFlags::from_bits_retain(vip.flags) & VipFlags::PORT_HASH;
        if id.port == 0 && !port_hash.is_empty() {
            // Such entries are keyed by the packet's destination port, which
            // (VIP, source address, source port) does not name.
            return Err(Error::invalid(
                "dst_vip",
                format!(
                    "VIP {id} is port-less with {}: its flows are keyed by destination port, which this request \
                     does not name; purge the VIP's entries instead",
                    port_hash
                ),
            ));
        }
        let key = flow::conn_key(vip, src, src_port, id.port);
        self.maps.del_conn(&key)
    }

    /// Lists the connection-table entries of VIP `id` for a purge, through a
    /// handle on the table of its own: the listing (one syscall per entry of
    /// the whole table, seconds for millions) needs neither `self` nor the
    /// caller's lock. [`Self::purge_conns`] then deletes them in chunks, so a
    /// caller that takes its lock per chunk lets other calls interleave.
    pub fn conn_purge(&self, id: &VipId) -> Result<ConnPurge> {
        let tag = self.vip(id)?.conn_tag;
        Ok(ConnPurge { id: *id, tag, table: self.maps.conn_table()? })
    }

    /// Deletes every connection-table entry of VIP `id` in one go; returns
    /// how many. (The API purges in chunks instead: [`Self::conn_purge`].)
    pub fn purge_vip_conns(&mut self, id: &VipId) -> Result<u64> {
        let purge = self.conn_purge(id)?;
        let keys = purge.keys();
        self.purge_conns(&purge, &keys)
    }

    /// Deletes `keys` (of `purge`'s listing) from the connection table;
    /// returns how many were there. 404 when the VIP was deleted since the
    /// listing (its entries went with it, or belong to a new VIP now).
    pub fn purge_conns(&mut self, purge: &ConnPurge, keys: &[ConnKey]) -> Result<u64> {
        if self.vip(&purge.id)?.conn_tag != purge.tag {
            return Err(Error::NotFound { what: format!("VIP {} (deleted during the purge)", purge.id) });
        }
        let mut deleted = 0;
        for key in keys {
            // An entry may be evicted between listing and deleting: not an error.
            if matches!(self.maps.del_conn(key), Ok(true)) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Empties the connection table.
    pub(super) fn clear_conns(&mut self) {
        self.maps.clear_conns();
    }

    /// Runs one frame through the balancer program (BPF_PROG_TEST_RUN).
    /// This is the real program on the real maps: counters count it and a
    /// miss inserts into the connection table, as a live packet would.
    pub fn simulate(&self, frame: &[u8]) -> Result<Simulated> {
        flow::simulate(program(&self.ebpf)?, frame)
    }

    /// The real a new connection of `flow` goes to (katran's
    /// `getRealForFlow`, whose simulator builds a SYN): a TCP SYN or a UDP
    /// datagram of the flow run through the query program, the live
    /// pipeline made dry. Changes nothing: no counter counts it and the
    /// connection table is neither read nor written. `None` when the flow is
    /// not for a VIP or the VIP has no real for it.
    pub fn real_for_flow(&self, flow: &Flow) -> Result<Option<IpAddr>> {
        flow::real_for_flow(program_named(&self.ebpf, weir_ebpf::BALANCER_DRY_PROGRAM)?, flow)
    }

    /// The real an existing connection of `flow` goes to: the real its
    /// connection-table entry names, or `None` when it has none the datapath
    /// would honour (no entry, an expired UDP entry, a NO_LRU VIP, not a VIP;
    /// its next packet would then take [`Self::real_for_flow`]'s real).
    ///
    /// A read from user space, on purpose: a lookup by a BPF program marks an
    /// LRU entry as used (it then survives eviction longer), while the
    /// syscall's lookup does not, so this changes nothing. The key is shaped
    /// by [`flow::conn_key`], the Rust mirror of the program's.
    pub fn existing_real_for_flow(&self, flow: &Flow) -> Result<Option<IpAddr>> {
        if flow.src.is_ipv6() != flow.dst.is_ipv6() {
            return Err(Error::bad_address("src", format!("{} and {} are of different families", flow.src, flow.dst)));
        }
        // lookup_vip: the VIP of the port first, then the port-less one.
        let id = |port| VipId { addr: flow.dst, port, proto: flow.proto };
        let Some(vip) = self.state.vips.get(&id(flow.dst_port)).or_else(|| self.state.vips.get(&id(0))) else {
            return Ok(None);
        };
        if vip.flags & abi::VIP_F_NO_LRU != 0 {
            return Ok(None);
        }
        let key = flow::conn_key(vip, flow.src, flow.src_port, flow.dst_port);
        let Some(entry) = self.maps.conn(&key)? else {
            return Ok(None);
        };
        // conn_fresh: the program ignores a UDP entry older than the timeout.
        if flow.proto == Protocol::Udp.number()
            && monotonic_coarse_ns().saturating_sub(entry.atime_ns) > abi::UDP_CONN_TIMEOUT_NS
        {
            return Ok(None);
        }
        let real = self.maps.real(entry.real_index)?;
        Ok(Some(real.ip()))
    }
}
