/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * weir_abi.h — the one ABI between the BPF programs and userspace.
 *
 * Every struct stored in a map, every flag bit, every counter index and every
 * map name lives here, and nowhere else on the C side. The Rust side is the
 * weir-abi crate (abi/); the tests in ebpf/src/abi.rs compare its sizes,
 * offsets, constants, flag and counter names and map names with this header
 * (through bpf/abi_layout.c), so the two cannot drift silently. Structs have explicit padding: no hidden
 * holes, so a zeroed Rust value is a valid map key.
 *
 * Addresses and ports are in network byte order. An IPv4 address occupies
 * addr[0]; addr[1..3] are zero. The 16 bytes alone do not say which family
 * they hold (10.0.0.1 and 0a00:0001:: are the same bytes), so every key that
 * holds an address either holds its family too (vip_key) or names something
 * that does (conn_key's conn_tag names one VIP, of one family).
 */
#ifndef WEIR_ABI_H
#define WEIR_ABI_H

#include <linux/types.h>

/* ---- VIP flags (Katran's numeric values, carried in vip_meta.flags) ---- */
#define VIP_F_NO_SPORT (1U << 0)           /* hash ignores the client's source port */
#define VIP_F_NO_LRU (1U << 1)             /* never read or write the connection table */
#define VIP_F_QUIC_VIP (1U << 2)           /* reserved: refused by the control plane */
#define VIP_F_DPORT_HASH (1U << 3)         /* hash on the destination port only */
#define VIP_F_SRC_ROUTING (1U << 4)        /* reserved: refused by the control plane */
#define VIP_F_LOCAL_VIP (1U << 5)          /* a LOCAL_REAL of this VIP gets XDP_PASS */
#define VIP_F_GLOBAL_LRU (1U << 6)         /* reserved: refused by the control plane */
#define VIP_F_HASH_SRC_DST_PORT (1U << 7)  /* port-less VIP keeps the dst port in the hash */
#define VIP_F_UDP_STABLE_ROUTING (1U << 8) /* reserved: refused by the control plane */
#define VIP_F_UDP_FLOW_MIGRATION (1U << 9) /* reserved: refused by the control plane */

/* The flags the datapath honours; every other bit is refused before it reaches a map. */
#define VIP_F_SUPPORTED \
  (VIP_F_NO_SPORT | VIP_F_NO_LRU | VIP_F_DPORT_HASH | VIP_F_LOCAL_VIP | VIP_F_HASH_SRC_DST_PORT)

/* ---- Real flags (carried in real_def.flags) ---- */
#define REAL_F_IPV6 (1U << 0)       /* the real's address is IPv6; set from the address */
#define REAL_F_LOCAL_REAL (1U << 1) /* the real is this host: XDP_PASS for LOCAL_VIPs */

/* ---- Map names (pinned by name under the agent's bpffs directory) ---- */
/* Kernel object names hold at most 15 characters. */
#define WEIR_MAP_VIPS weir_vips
#define WEIR_MAP_REALS weir_reals
#define WEIR_MAP_CH_RINGS weir_ch_rings
#define WEIR_MAP_CONNS weir_conns
#define WEIR_MAP_CTL weir_ctl
#define WEIR_MAP_VIP_STATS weir_vip_stats
#define WEIR_MAP_REAL_STATS weir_real_stats
#define WEIR_MAP_STATS weir_stats
#define WEIR_MAP_VIP_FILTER weir_vip_filter
#define WEIR_MAP_DECAP_STATS weir_decaps
/* The healthcheck program's maps (healthcheck.bpf.c). */
#define WEIR_MAP_HC_REALS weir_hc_reals
#define WEIR_MAP_HC_CTL weir_hc_ctl
#define WEIR_MAP_HC_KEYS weir_hc_keys
#define WEIR_MAP_HC_KEY_PKTS weir_hc_key_pkt
#define WEIR_MAP_HC_STATS weir_hc_stats

/* ---- Defaults and limits ---- */
#define WEIR_DEFAULT_RING_SIZE 65537U /* Maglev ring slots per VIP (a prime) */
#define WEIR_DEFAULT_MAX_VIPS 512U
#define WEIR_DEFAULT_MAX_REALS 4096U
#define WEIR_DEFAULT_CONNS 8000000U                           /* connection-table entries */
#define WEIR_DEFAULT_MTU 1500U                                /* L3 MTU of the egress link */
#define WEIR_UDP_CONN_TIMEOUT_NS (30ULL * 1000 * 1000 * 1000) /* Katran's LRU_UDP_TIMEOUT */
#define WEIR_MAX_CONN_RATE 125000ULL /* new connections per second per CPU before "flood" */
#define WEIR_ONE_SEC_NS (1000ULL * 1000 * 1000)
#define WEIR_ENCAP_TTL 64       /* TTL / hop limit of the outer header */
#define WEIR_REAL_NONE 0U       /* real index 0 is never allocated: an empty ring slot */
#define WEIR_VIP_FILTER_BITS 12 /* the VIP address filter has 2^12 buckets */
#define WEIR_VIP_FILTER_SIZE (1U << WEIR_VIP_FILTER_BITS)
#define WEIR_FILTER_MULT 0x9E3779B1U /* Fibonacci hashing: golden ratio * 2^32 */

/* The ICMP too-big replies (icmp.h): their TTL / hop limit (Katran's DEFAULT_TTL), and how many
 * bytes of the offending IP packet they quote (Katran's ICMP_TOOBIG_SIZE and ICMP6_TOOBIG_SIZE
 * less the Ethernet header): its IP header and 64 (IPv4) or 208 (IPv6) bytes more. */
#define WEIR_ICMP_TTL 64
#define WEIR_ICMP_QUOTE_V4 84U
#define WEIR_ICMP_QUOTE_V6 248U

/* ---- Map keys and values ---- */

/* Address families of vip_key.family: the parser's is_v6, as it is. */
#define WEIR_FAMILY_V4 0
#define WEIR_FAMILY_V6 1

/*
 * weir_vips key: a VIP is (family, address, port, protocol); port 0 = every
 * port. Without the family, 32.1.13.184 (addr[0] = 0x20010db8) and
 * 2001:db8:: would be one key. The family takes what was a padding byte and
 * costs a packet one byte store of a value the parser already has; mapping
 * IPv4 into ::ffff:0:0/96 instead would cost two word stores per packet and
 * change every IPv4 key and filter bucket.
 */
struct vip_key {
  __be32 addr[4];
  __be16 port;
  __u8 proto;
  __u8 family; /* WEIR_FAMILY_V4 or WEIR_FAMILY_V6 */
};
_Static_assert(sizeof(struct vip_key) == 20, "vip_key layout");

/*
 * weir_vips value. vip_num indexes the VIP's ring and its counters (and is
 * reused); conn_tag names the VIP in connection-table keys and is never
 * reused, so no entry outlives the VIP it was made for.
 */
struct vip_meta {
  __u32 flags;
  __u32 vip_num;
  __u32 conn_tag;
};
_Static_assert(sizeof(struct vip_meta) == 12, "vip_meta layout");

/* weir_reals value, indexed by real index (1..max_reals; 0 = none). */
struct real_def {
  __be32 addr[4];
  __u8 flags;
  __u8 pad[3];
};
_Static_assert(sizeof(struct real_def) == 20, "real_def layout");

/*
 * weir_conns key: a flow of one VIP, after the VIP's flags shaped it. The VIP
 * (address, port, protocol) is named by its conn_tag: 24 bytes hash in one
 * jhash round where a full 5-tuple takes three, and the table is 16 bytes a
 * flow smaller.
 */
struct conn_key {
  __be32 src[4];
  __u32 conn_tag;
  __be16 sport;
  __be16 dport;
};
_Static_assert(sizeof(struct conn_key) == 24, "conn_key layout");

/* weir_conns value: where the flow goes and, for UDP, when it was last seen. */
struct conn_entry {
  __u32 real_index;
  __u32 pad;
  __u64 atime_ns;
};
_Static_assert(sizeof(struct conn_entry) == 16, "conn_entry layout");

/*
 * weir_vip_filter value: how many VIPs (and how many of them port-less) have
 * an address in this bucket. A packet whose bucket holds no VIP is not for a
 * VIP, which costs one array read instead of two hash lookups; the port-less
 * lookup happens only where a port-less VIP may match.
 */
struct vip_filter {
  __u32 vips;
  __u32 portless;
};
_Static_assert(sizeof(struct vip_filter) == 8, "vip_filter layout");

/*
 * vip_filter_bucket - the filter bucket of an address: its 32-bit words
 * (as loaded from memory) XORed, then Fibonacci-hashed to
 * WEIR_VIP_FILTER_BITS bits. An IPv4 address is addr[0] (the rest is zero).
 * The agent computes the same function (abi.rs, vip_filter_bucket).
 */
static inline __u32 vip_filter_bucket(const __u32 addr[4]) {
  __u32 word = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
  return (word * WEIR_FILTER_MULT) >> (32 - WEIR_VIP_FILTER_BITS);
}

/*
 * weir_ch_rings value: WEIR_RING_SLOTS_PER_ELEM consecutive ring slots, each
 * a real index. The kernel rounds an array's values up to 8 bytes, so one
 * u32 per element (Katran's ch_rings) pays 8 bytes a slot; two per element
 * pay 4, and the map holds max_vips * ring_size slots in
 * ceil(max_vips * ring_size / 2) elements. Slot g (g = vip_num * ring_size
 * + s) is real[g % 2] of element g / 2, i.e. the g-th u32 of the map's
 * memory, which is how the agent writes it through its mapping.
 */
#define WEIR_RING_SLOTS_PER_ELEM 2
struct ring_slots {
  __u32 real[WEIR_RING_SLOTS_PER_ELEM];
};
_Static_assert(sizeof(struct ring_slots) == 8, "ring_slots layout: a multiple of 8, no kernel rounding");

/* weir_ctl value (one entry): settings userspace may change at run time. */
struct lb_ctl {
  __u8 default_mac[6]; /* Ethernet destination of encapsulated packets */
  __u8 pad[2];
};
_Static_assert(sizeof(struct lb_ctl) == 8, "lb_ctl layout");

/* Value of every counter map: two numbers whose meaning depends on the index. */
struct lb_counter {
  __u64 v1;
  __u64 v2;
};
_Static_assert(sizeof(struct lb_counter) == 16, "lb_counter layout");

/*
 * Counters of struct global_stats (weir_stats). Each names what its v1 and v2 count; the
 * meanings follow Katran's counters so the katran-server /stats endpoints can be
 * served faithfully.
 */
enum weir_stat {
  WEIR_STAT_LRU = 0,       /* v1: packets to VIPs; v2: connection-table misses */
  WEIR_STAT_LRU_MISS,      /* v1: TCP SYN misses; v2: TCP non-SYN misses */
  WEIR_STAT_LRU_FALLBACK,  /* v1/v2: always 0 — weir's table is never missing (Katran: fallback LRU hits) */
  WEIR_STAT_CH_DROP,       /* v1: ring slot empty; v2: real index had no real */
  WEIR_STAT_ENCAP_FAIL,    /* v1: headroom or bounds failure; v2: family pair not encapsulable */
  WEIR_STAT_ICMP_TOOBIG,   /* v1: IPv4 packets too big once encapsulated (answered with ICMP
                            * "fragmentation needed" when weir_icmp_too_big is set); v2: IPv6
                            * ("packet too big") */
  WEIR_STAT_ICMP_FWD,      /* v1: ICMPv4 errors about VIP flows sent to the flow's real; v2: ICMPv6 */
  WEIR_STAT_NOT_BALANCED,  /* v1: IPv4 with options; v2: fragments (IPv4 and IPv6) */
  WEIR_STAT_NEW_CONN_RATE, /* v1: new connections this second; v2: when the second began (ns) */
  WEIR_STAT_XDP_TOTAL,     /* v1: packets; v2: bytes (whole frame) */
  WEIR_STAT_XDP_TX,        /* v1: packets; v2: bytes (whole frame, as received) */
  WEIR_STAT_XDP_DROP,      /* v1: packets; v2: bytes */
  WEIR_STAT_XDP_PASS,      /* v1: packets; v2: bytes */
  WEIR_STAT_BAD_LEN,       /* v1: IPv4 VIP packets dropped as their frame is shorter than tot_len,
                            * or tot_len shorter than the header; v2: IPv6, shorter than 40 +
                            * payload_len (see lengths_agree) */
  WEIR_STAT_MAX,
};

/*
 * The value of weir_stats' one (per-CPU) entry: every global counter, so a
 * packet pays one map lookup for all the counters it touches.
 */
struct global_stats {
  struct lb_counter stat[WEIR_STAT_MAX];
};
_Static_assert(sizeof(struct global_stats) == 16 * WEIR_STAT_MAX, "global_stats layout");

/* Indices of weir_decaps (per-CPU), kept by the real-side decap program. */
enum weir_decap_stat {
  WEIR_DECAP_STAT_V4 = 0, /* v1: packets decapsulated from an IPv4 outer header; v2: bytes */
  WEIR_DECAP_STAT_V6,     /* v1: packets decapsulated from an IPv6 outer header; v2: bytes */
  WEIR_DECAP_STAT_PASS,   /* v1: packets passed untouched (not encapsulated); v2: bytes */
  WEIR_DECAP_STAT_MAX,
};

/* ---- The healthcheck program (healthcheck.bpf.c) ---- */

/* weir_hc_ctl value (one entry): where encapsulated probes leave, and how they are addressed. */
struct hc_ctl {
  __u32 ifindex;    /* the main interface: probes leave there (0: not set, probes are dropped) */
  __u32 mtu;        /* its L3 MTU: larger probes once encapsulated are dropped as too big */
  __u8 src_mac[6];  /* Ethernet source of probes: the main interface's MAC */
  __u8 dst_mac[6];  /* Ethernet destination: the balancer's default MAC (the router) */
  __be32 src_v4;    /* outer source toward IPv4 reals (katran_src_v4); 0: derived as the balancer does */
  __be32 src_v6[4]; /* outer source toward IPv6 reals (katran_src_v6); all 0: derived */
};
_Static_assert(sizeof(struct hc_ctl) == 40, "hc_ctl layout");

/* weir_hc_stats value (per CPU, one entry): Katran's hc_stats. */
struct hc_stats {
  __u64 processed; /* probes encapsulated and sent */
  __u64 dropped;   /* probes dropped (too big, no control entry, not encapsulable) */
  __u64 skipped;   /* packets that were not probes (no mark, or a mark no real has) */
  __u64 too_big;   /* probes dropped as too big once encapsulated (also in dropped) */
};
_Static_assert(sizeof(struct hc_stats) == 32, "hc_stats layout");

#endif /* WEIR_ABI_H */
