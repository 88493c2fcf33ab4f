/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * balancer.bpf.c — weir's XDP load balancer, with Katran's semantics.
 *
 * A packet goes through stages:
 *   parse → look up the VIP → pick a real → encapsulate → transmit
 * Packets that are not for a VIP leave untouched with XDP_PASS. A real is
 * picked from the connection table (for packets other than TCP SYNs) or else
 * from the VIP's Maglev ring; the packet is wrapped in an outer IP header
 * addressed to the real and sent back out with XDP_TX.
 *
 * Two entry points share one pipeline and the same maps:
 * - weir_balancer, the live program, attached to the interface;
 * - weir_balancer_dry, never attached: the agent runs it with
 *   BPF_PROG_TEST_RUN to ask where a packet would go (real-for-flow) without
 *   changing anything. It neither counts (no global, VIP or real counter) nor
 *   touches the connection table: no insert, no refresh (not even a lookup,
 *   which on an LRU map marks the entry used), no flood-guard accounting.
 *   Its only effect is on the frame it is given.
 * Every stage takes `dry`, always a literal at the entry point: the stages
 * are inlined, so the compiler builds two specialised copies of one code
 * path, and the live one is the code it was before the flag existed.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "encap.h"
#include "icmp.h"
#include "jhash.h"
#include "maps.h"
#include "parse.h"
#include "weir_abi.h"

/* Set by the agent at load time (EbpfLoader::override_global). */
const volatile __u32 weir_ring_size = WEIR_DEFAULT_RING_SIZE;
const volatile __u32 weir_mtu = WEIR_DEFAULT_MTU;
/* Non-zero: answer a VIP packet too big once encapsulated with ICMP (see
 * too_big); zero: drop it. On by default, as the agent loads it. */
const volatile __u32 weir_icmp_too_big = 1;

/*
 * Connection ages (30 s for UDP) and the flood window (1 s) need no better
 * than a scheduler tick, so the datapath reads the coarse clock: a fraction of
 * the cost of bpf_ktime_get_ns, which reads the TSC. Both are CLOCK_MONOTONIC.
 */

/* Seeds of the flow hash: fixed, so that every node hashes a flow alike. */
#define HASH_SEED 0x77656972    /* "weir" */
#define HASH_SEED_V6 0x6c623436 /* "lb46" */

/* count - add to one of the global counters of this CPU (never in a dry run). */
static __always_inline void count(bool dry, struct global_stats *st, enum weir_stat stat, __u64 v1,
                                  __u64 v2) {
  if (dry)
    return;
  st->stat[stat].v1 += v1;
  st->stat[stat].v2 += v2;
}

/* count_in - add one packet of @bytes to @map[@index] (per-VIP / per-real
 * counters; never in a dry run). */
static __always_inline void count_in(bool dry, void *map, __u32 index, __u64 bytes) {
  if (dry)
    return;
  struct lb_counter *c = bpf_map_lookup_elem(map, &index);
  if (!c)
    return;
  c->v1 += 1;
  c->v2 += bytes;
}

/**
 * lookup_vip - find the VIP of a flow: (address, port, proto), then the
 * port-less (address, 0, proto) — each only where the address filter says a
 * VIP of that kind may be.
 * Returns: the VIP's metadata, or NULL when the packet is not for a VIP.
 */
static __always_inline struct vip_meta *lookup_vip(struct packet *pkt) {
  __u32 bucket = vip_filter_bucket(pkt->flow.dst);
  struct vip_filter *filter = bpf_map_lookup_elem(&WEIR_MAP_VIP_FILTER, &bucket);
  if (!filter || !filter->vips)
    return NULL;
  struct vip_key key = {};
  __builtin_memcpy(key.addr, pkt->flow.dst, 16);
  key.port = pkt->flow.dport;
  key.proto = pkt->flow.proto;
  key.family = pkt->is_v6; /* WEIR_FAMILY_V4 (0) or WEIR_FAMILY_V6 (1) */
  struct vip_meta *vip = bpf_map_lookup_elem(&WEIR_MAP_VIPS, &key);
  if (vip || !filter->portless)
    return vip;
  key.port = 0;
  vip = bpf_map_lookup_elem(&WEIR_MAP_VIPS, &key);
  /* A port-less VIP hashes every destination port of a client alike, unless
   * told to keep it. */
  if (vip && !(vip->flags & (VIP_F_DPORT_HASH | VIP_F_HASH_SRC_DST_PORT)))
    pkt->flow.dport = 0;
  return vip;
}

/*
 * shape_flow - apply the VIP's hashing flags to the flow, which is then both
 * the connection-table key and the hash input.
 */
static __always_inline void shape_flow(struct packet *pkt, const struct vip_meta *vip) {
  if (vip->flags & VIP_F_DPORT_HASH) {
    /* Every client of a destination port goes to the same real (e.g. VoIP). */
    pkt->flow.sport = pkt->flow.dport;
    __builtin_memset(pkt->flow.src, 0, 16);
  }
  if (vip->flags & VIP_F_NO_SPORT)
    pkt->flow.sport = 0;
}

/* flow_hash - the flow's hash: source address and both ports, as Katran. */
static __always_inline __u32 flow_hash(const struct packet *pkt) {
  __u32 ports = ((__u32)pkt->flow.sport << 16) | pkt->flow.dport;
  if (pkt->is_v6)
    return jhash_2words(jhash_4words(pkt->flow.src, HASH_SEED_V6), ports, HASH_SEED);
  return jhash_2words(pkt->flow.src[0], ports, HASH_SEED);
}

/*
 * under_flood - count a new connection; true when this CPU has seen more than
 * WEIR_MAX_CONN_RATE in the current second (then new flows skip the table).
 */
static __always_inline bool under_flood(struct global_stats *st, __u64 now) {
  struct lb_counter *rate = &st->stat[WEIR_STAT_NEW_CONN_RATE];
  if (now - rate->v2 > WEIR_ONE_SEC_NS) {
    rate->v1 = 1;
    rate->v2 = now;
    return false;
  }
  rate->v1 += 1;
  return rate->v1 > WEIR_MAX_CONN_RATE;
}

/**
 * conn_fresh - whether a connection-table entry still holds: UDP entries
 * older than WEIR_UDP_CONN_TIMEOUT_NS do not (and a fresh one is touched).
 */
static __always_inline bool conn_fresh(const struct packet *pkt, struct conn_entry *conn) {
  if (pkt->flow.proto != IPPROTO_UDP)
    return true;
  __u64 now = bpf_ktime_get_coarse_ns();
  if (now - conn->atime_ns > WEIR_UDP_CONN_TIMEOUT_NS)
    return false;
  conn->atime_ns = now;
  return true;
}

/**
 * conn_remember - record that the flow goes to @real_index.
 * @conn: the flow's existing entry, or NULL
 *
 * An existing entry is rewritten in place: replacing it would take a new
 * node from the LRU, whose free-list rotation is the dearest step of a SYN.
 */
static __always_inline void conn_remember(struct global_stats *st, const struct packet *pkt,
                                          const struct conn_key *key, struct conn_entry *conn,
                                          __u32 real_index) {
  __u64 now = bpf_ktime_get_coarse_ns();
  if (under_flood(st, now))
    return;
  __u64 atime = pkt->flow.proto == IPPROTO_UDP ? now : 0;
  if (conn) {
    conn->real_index = real_index;
    conn->atime_ns = atime;
    return;
  }
  struct conn_entry fresh = {.real_index = real_index, .atime_ns = atime};
  bpf_map_update_elem(&WEIR_MAP_CONNS, key, &fresh, BPF_ANY);
}

/**
 * ring_pick - the real of a flow by consistent hashing on the VIP's ring.
 * Returns: the real index, or WEIR_REAL_NONE when the slot is empty.
 */
static __always_inline __u32 ring_pick(bool dry, struct global_stats *st, const struct packet *pkt,
                                       const struct vip_meta *vip) {
  __u32 ring_size = weir_ring_size;
  __u32 slot = vip->vip_num * ring_size + flow_hash(pkt) % ring_size;
  __u32 elem = slot / WEIR_RING_SLOTS_PER_ELEM;
  struct ring_slots *slots = bpf_map_lookup_elem(&WEIR_MAP_CH_RINGS, &elem);
  __u32 real_index = slots ? slots->real[slot % WEIR_RING_SLOTS_PER_ELEM] : WEIR_REAL_NONE;
  if (real_index == WEIR_REAL_NONE)
    count(dry, st, WEIR_STAT_CH_DROP, 1, 0);
  return real_index;
}

/**
 * pick_real - the real of a VIP flow: the connection table first (but never
 * for a SYN, which always rehashes and refreshes the table), then the ring,
 * whose choice the table then remembers. ICMP errors leave no state, and
 * NO_LRU VIPs never use the table. A dry run is the ring's answer alone:
 * it must not even look the flow up (see the top of this file), so it is
 * the answer for a new connection (the agent only dry-runs SYNs).
 * Returns: the real index, or WEIR_REAL_NONE (drop).
 */
static __always_inline __u32 pick_real(bool dry, struct global_stats *st, const struct packet *pkt,
                                       const struct vip_meta *vip) {
  bool syn = pkt->flags & PKT_F_SYN;
  bool stateful = !dry && !(vip->flags & VIP_F_NO_LRU) && !(pkt->flags & PKT_F_ICMP);
  struct conn_entry *conn = NULL;
  struct conn_key key = {.conn_tag = vip->conn_tag, .sport = pkt->flow.sport, .dport = pkt->flow.dport};
  __builtin_memcpy(key.src, pkt->flow.src, 16);
  if (!dry && !(vip->flags & VIP_F_NO_LRU)) {
    conn = bpf_map_lookup_elem(&WEIR_MAP_CONNS, &key);
    if (conn && !syn && conn_fresh(pkt, conn))
      return conn->real_index;
  }
  if (pkt->flow.proto == IPPROTO_TCP && !(pkt->flags & PKT_F_ICMP))
    count(dry, st, WEIR_STAT_LRU_MISS, syn, !syn);
  count(dry, st, WEIR_STAT_LRU, 0, 1);
  __u32 real_index = ring_pick(dry, st, pkt, vip);
  if (real_index != WEIR_REAL_NONE && stateful)
    conn_remember(st, pkt, &key, conn, real_index);
  return real_index;
}

/* encap_overhead - bytes the outer header adds for a real of this family. */
static __always_inline __u32 encap_overhead(const struct real_def *real) {
  return real->flags & REAL_F_IPV6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
}

/**
 * lengths_agree - whether the frame holds the IP packet its header describes.
 *
 * A frame shorter than the header's length is malformed (the kernel's ip_rcv
 * drops it too), as is an IPv4 tot_len shorter than the header itself. A
 * longer frame is legal: Ethernet pads short frames to 60 bytes, a NIC with
 * rx-fcs on leaves the 4-byte FCS, some switches append trailers, and the
 * kernel trims them all. Such a frame is balanced as it is, the excess
 * carried behind the inner packet: the outer header's length covers the
 * inner packet only, so the real's stack trims the excess as it would have
 * here. Trimming it (bpf_xdp_adjust_tail) would cost a helper call on every
 * padded ACK; dropping it would drop whole links' traffic (rx-fcs). What
 * goes on the wire is the frame, so the MTU check (balance) is made against
 * the frame's length, never the header's: a 1514-byte frame whose tot_len
 * says 40 is too big, not 40 bytes.
 */
static __always_inline bool lengths_agree(const struct packet *pkt) {
  if (pkt->frame_l3_len < pkt->l3_len)
    return false;
  return pkt->is_v6 || pkt->l3_len >= sizeof(struct iphdr);
}

/**
 * too_big - the fate of a VIP packet that would not fit the link once
 * encapsulated: counted, then answered with ICMP "fragmentation needed" /
 * ICMPv6 "packet too big" reporting @mtu, so that the client's path MTU
 * discovery lowers its packet size (Katran's ICMP_TOOBIG_GENERATION; here
 * weir_icmp_too_big chooses at load time). Never answered: an ICMP error
 * (RFC 1122 3.2.2, RFC 4443 2.4(e): no error about an error), or anything
 * in a dry run, whose frame must stay a question about where a flow goes.
 * @mtu: the largest IP packet that fits: the link's MTU less the outer header
 * Returns: XDP_TX with the reply in the frame, else XDP_DROP.
 */
static __always_inline int too_big(bool dry, struct xdp_md *ctx, struct global_stats *st, struct packet *pkt,
                                   __u32 mtu) {
  count(dry, st, WEIR_STAT_ICMP_TOOBIG, !pkt->is_v6, pkt->is_v6);
  if (dry || !weir_icmp_too_big || (pkt->flags & PKT_F_ICMP))
    return XDP_DROP;
  bool answered = pkt->is_v6 ? icmp_too_big_v6(ctx, pkt, mtu) : icmp_too_big_v4(ctx, pkt, mtu);
  return answered ? XDP_TX : XDP_DROP;
}

/**
 * balance - the fate of a packet addressed to a VIP.
 * Returns: XDP_TX once encapsulated toward a real (or answered with an ICMP
 * too-big), XDP_PASS for a local real, XDP_DROP when no real can take it
 * (each drop is counted, unless @dry).
 */
static __always_inline int balance(bool dry, struct xdp_md *ctx, struct global_stats *st, struct packet *pkt,
                                   const struct vip_meta *vip) {
  /* Before anything else: a malformed packet leaves no connection entry. */
  if (!lengths_agree(pkt)) {
    count(dry, st, WEIR_STAT_BAD_LEN, !pkt->is_v6, pkt->is_v6);
    return XDP_DROP;
  }
  count(dry, st, WEIR_STAT_LRU, 1, 0);
  shape_flow(pkt, vip);
  __u32 real_index = pick_real(dry, st, pkt, vip);
  if (real_index == WEIR_REAL_NONE)
    return XDP_DROP;
  struct real_def *real = bpf_map_lookup_elem(&WEIR_MAP_REALS, &real_index);
  if (!real) {
    count(dry, st, WEIR_STAT_CH_DROP, 0, 1);
    return XDP_DROP;
  }
  /* A local real takes the packet as it is; anything else must still fit
   * the link once encapsulated: the whole frame (with any padding) is what
   * goes on. Only what goes on is counted as sent. */
  bool local = (vip->flags & VIP_F_LOCAL_VIP) && (real->flags & REAL_F_LOCAL_REAL);
  if (!local && pkt->frame_l3_len + encap_overhead(real) > weir_mtu)
    return too_big(dry, ctx, st, pkt, weir_mtu - encap_overhead(real));
  if (pkt->flags & PKT_F_ICMP)
    count(dry, st, WEIR_STAT_ICMP_FWD, !pkt->is_v6, pkt->is_v6);
  count_in(dry, &WEIR_MAP_VIP_STATS, vip->vip_num, pkt->l3_len);
  count_in(dry, &WEIR_MAP_REAL_STATS, real_index, pkt->l3_len);
  if (local)
    return XDP_PASS;

  __u32 ctl_key = 0;
  struct lb_ctl *ctl = bpf_map_lookup_elem(&WEIR_MAP_CTL, &ctl_key);
  if (!ctl) /* only for the verifier: index 0 always exists */
    return XDP_DROP;
  bool encapsulated;
  if (real->flags & REAL_F_IPV6) {
    encapsulated = encap_v6(ctx, pkt, real, ctl);
  } else if (!pkt->is_v6) {
    encapsulated = encap_v4(ctx, pkt, real, ctl);
  } else {
    /* IPv6-in-IPv4 is not a supported pair: the control plane refuses it. */
    count(dry, st, WEIR_STAT_ENCAP_FAIL, 0, 1);
    return XDP_DROP;
  }
  if (!encapsulated) {
    count(dry, st, WEIR_STAT_ENCAP_FAIL, 1, 0);
    return XDP_DROP;
  }
  return XDP_TX;
}

/**
 * process - parse a frame and decide its fate.
 * Returns: the XDP verdict.
 */
static __always_inline int process(bool dry, struct xdp_md *ctx, struct global_stats *st) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct packet pkt = {};
  enum parse_result parsed;

  __be16 proto = parse_eth(data, data_end, &pkt);
  if (proto == bpf_htons(ETH_P_IP))
    parsed = parse_v4(data + pkt.l2_len, data_end, &pkt);
  else if (proto == bpf_htons(ETH_P_IPV6))
    parsed = parse_v6(data + pkt.l2_len, data_end, &pkt);
  else
    return XDP_PASS;

  switch (parsed) {
  case PARSE_OK:
    break;
  case PARSE_V4_OPTIONS:
    count(dry, st, WEIR_STAT_NOT_BALANCED, 1, 0);
    return XDP_PASS;
  case PARSE_FRAGMENT:
    count(dry, st, WEIR_STAT_NOT_BALANCED, 0, 1);
    return XDP_PASS;
  default:
    return XDP_PASS;
  }

  /* What the frame holds from the IP header on (parse_eth checked l2_len). */
  /* The verifier refuses 32-bit arithmetic on packet pointers: the barrier
   * keeps clang from folding this 64-bit difference into 32-bit sums later. */
  __u64 frame_len = (__u64)ctx->data_end - (__u64)ctx->data;
  barrier_var(frame_len);
  pkt.frame_l3_len = frame_len - pkt.l2_len;
  /* The outer source is seeded by the client as it was, before any reshaping. */
  pkt.client_tail = pkt.is_v6 ? pkt.flow.src[3] : pkt.flow.src[0];
  pkt.client_port = pkt.flow.sport;

  struct vip_meta *vip = lookup_vip(&pkt);
  if (!vip)
    return XDP_PASS;
  return balance(dry, ctx, st, &pkt, vip);
}

/* The live program: attached to the interface. */
SEC("xdp")
int weir_balancer(struct xdp_md *ctx) {
  __u64 bytes = ctx->data_end - ctx->data;
  __u32 zero = 0;
  struct global_stats *st = bpf_map_lookup_elem(&WEIR_MAP_STATS, &zero);
  if (!st) /* only for the verifier: entry 0 always exists */
    return XDP_PASS;
  int action = process(false, ctx, st);
  count(false, st, WEIR_STAT_XDP_TOTAL, 1, bytes);
  switch (action) {
  case XDP_TX:
    count(false, st, WEIR_STAT_XDP_TX, 1, bytes);
    break;
  case XDP_DROP:
    count(false, st, WEIR_STAT_XDP_DROP, 1, bytes);
    break;
  default:
    count(false, st, WEIR_STAT_XDP_PASS, 1, bytes);
    break;
  }
  return action;
}

/*
 * The query program: the same pipeline, dry (see the top of this file). It
 * has no counters to address, so its stages are handed none.
 */
SEC("xdp")
int weir_balancer_dry(struct xdp_md *ctx) {
  return process(true, ctx, NULL);
}

char _license[] SEC("license") = "GPL";
