/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * decap.bpf.c — weir_decap, the real-side decapsulation program.
 *
 * weir's balancer sends a client's packet to a real inside an outer IP header:
 * IPv4-in-IPv4 (outer protocol 4), IPv6-in-IPv6 (outer next header 41) or
 * IPv4-in-IPv6 (outer next header 4). A real without ipip/ip6tnl devices runs
 * this program on its receiving interface: it strips the outer header in place
 * and passes the inner packet, addressed to a VIP on the real's loopback, to the
 * kernel stack. The inner packet is left byte for byte as the client sent it
 * (its checksums are the client's).
 *
 * Stages: parse L2 (Ethernet and at most one 802.1Q/802.1ad tag, which is kept)
 * → parse the outer header (IPv4 without options and unfragmented, or IPv6
 * without extension headers, carrying protocol 4 or 41) → check the inner header
 * → strip → count. Anything else is passed untouched and counted as PASS.
 *
 * Map: weir_decaps, pinned by name next to the program's link.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ip.h"
#include "l2.h"
#include "weir_abi.h"

/* What parsing learnt about a packet this program decapsulates. */
struct decap_pkt {
  __u32 l2_len;       /* Ethernet header plus the VLAN tag, if any: 14 or 18 */
  __u32 outer_len;    /* the outer IP header, the bytes stripped: 20 or 40 */
  __u32 inner_len;    /* L3 length of the inner packet, from its own header */
  __u32 stat;         /* WEIR_DECAP_STAT_V4 or _V6: the outer header's family */
  __be16 inner_proto; /* ethertype of the inner packet */
};

/* Outcome of decap_strip(). */
enum decap_result {
  DECAP_DONE,      /* outer header gone, L2 header rewritten */
  DECAP_UNTOUCHED, /* nothing changed: pass the packet as it came */
  DECAP_BROKEN,    /* head moved but L2 not rewritten: must not reach the stack */
};

/* weir_decaps: per CPU, packets (v1) and bytes (v2) per enum weir_decap_stat. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, WEIR_DECAP_STAT_MAX);
  __type(key, __u32);
  __type(value, struct lb_counter);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_DECAP_STATS SEC(".maps");

/**
 * decap_count() - count one packet of @bytes in counter @stat of this CPU
 * @stat: index in weir_decaps (enum weir_decap_stat)
 * @bytes: added to v2
 */
static __always_inline void decap_count(__u32 stat, __u64 bytes) {
  struct lb_counter *counter = bpf_map_lookup_elem(&WEIR_MAP_DECAP_STATS, &stat);

  /* Never NULL for stat < WEIR_DECAP_STAT_MAX; the check is for the verifier. */
  if (!counter)
    return;
  counter->v1 += 1;
  counter->v2 += bytes;
}

/**
 * set_inner_proto() - record the inner family an outer header announces
 * @proto: the outer header's protocol / next header
 * @pkt: receives inner_proto
 *
 * Returns: 0 for IPv4 (4) and IPv6 (41), -1 for anything else.
 */
static __always_inline int set_inner_proto(__u8 proto, struct decap_pkt *pkt) {
  if (proto == IPPROTO_IPIP) {
    pkt->inner_proto = bpf_htons(ETH_P_IP);
    return 0;
  }
  if (proto == IPPROTO_IPV6) {
    pkt->inner_proto = bpf_htons(ETH_P_IPV6);
    return 0;
  }
  return -1;
}

/**
 * parse_outer_v4() - check that an IPv4 header is weir's encapsulation
 * @iph: the header, not yet bounds-checked
 * @data_end: end of the frame
 * @pkt: receives outer_len, stat and inner_proto
 *
 * weir's outer headers never carry options and are never fragmented; a header
 * that does is someone else's and is left alone.
 *
 * Returns: 0 when @iph is an option-less, unfragmented IPv4 header carrying
 * IPv4 or IPv6; -1 otherwise.
 */
static __always_inline int parse_outer_v4(struct iphdr *iph, void *data_end, struct decap_pkt *pkt) {
  if ((void *)(iph + 1) > data_end)
    return -1;
  if (iph->version != 4 || iph->ihl != 5)
    return -1;
  if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
    return -1;
  pkt->outer_len = sizeof(*iph);
  pkt->stat = WEIR_DECAP_STAT_V4;
  return set_inner_proto(iph->protocol, pkt);
}

/**
 * parse_outer_v6() - check that an IPv6 header is weir's encapsulation
 * @ip6h: the header, not yet bounds-checked
 * @data_end: end of the frame
 * @pkt: receives outer_len, stat and inner_proto
 *
 * weir's outer headers have no extension headers: the next header must be the
 * inner packet itself.
 *
 * Returns: 0 when @ip6h is an IPv6 header directly followed by IPv4 or IPv6;
 * -1 otherwise.
 */
static __always_inline int parse_outer_v6(struct ipv6hdr *ip6h, void *data_end, struct decap_pkt *pkt) {
  if ((void *)(ip6h + 1) > data_end)
    return -1;
  if (ip6h->version != 6)
    return -1;
  pkt->outer_len = sizeof(*ip6h);
  pkt->stat = WEIR_DECAP_STAT_V6;
  return set_inner_proto(ip6h->nexthdr, pkt);
}

/**
 * parse_inner() - check the inner header and read the inner packet's length
 * @inner: the inner header, right after the outer one; not yet bounds-checked
 * @data_end: end of the frame
 * @pkt: inner_proto says which family to expect; receives inner_len
 *
 * Returns: 0 when a whole header of the announced family is there and its
 * version nibble agrees; -1 otherwise.
 */
static __always_inline int parse_inner(void *inner, void *data_end, struct decap_pkt *pkt) {
  struct iphdr *iph = inner;
  struct ipv6hdr *ip6h = inner;

  if (pkt->inner_proto == bpf_htons(ETH_P_IP)) {
    if ((void *)(iph + 1) > data_end)
      return -1;
    if (iph->version != 4)
      return -1;
    pkt->inner_len = bpf_ntohs(iph->tot_len);
    return 0;
  }
  if ((void *)(ip6h + 1) > data_end)
    return -1;
  if (ip6h->version != 6)
    return -1;
  pkt->inner_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
  return 0;
}

/**
 * parse_packet() - recognise one of weir's encapsulated packets
 * @data: start of the frame
 * @data_end: end of the frame
 * @pkt: receives everything decap_strip() and the counters need
 *
 * Returns: 0 when the frame is L2, an outer IP header of weir's and a whole
 * inner header of the family the outer one announces; -1 otherwise.
 */
static __always_inline int parse_packet(void *data, void *data_end, struct decap_pkt *pkt) {
  __be16 proto = parse_l2(data, data_end, &pkt->l2_len);
  void *l3 = data + pkt->l2_len;
  int err;

  if (proto == bpf_htons(ETH_P_IP))
    err = parse_outer_v4(l3, data_end, pkt);
  else if (proto == bpf_htons(ETH_P_IPV6))
    err = parse_outer_v6(l3, data_end, pkt);
  else
    return -1;
  if (err)
    return -1;
  return parse_inner(l3 + pkt->outer_len, data_end, pkt);
}

/**
 * decap_strip() - remove the outer IP header, keeping the L2 header in front
 * @ctx: the packet, already accepted by parse_packet()
 * @pkt: what parse_packet() learnt
 *
 * Saves the L2 header, moves the start of the packet past the outer header,
 * then writes the L2 header back in front of the inner packet with the inner
 * ethertype (in the VLAN tag when there is one; the tag itself is kept).
 *
 * Returns: DECAP_DONE; DECAP_UNTOUCHED when the head could not be moved;
 * DECAP_BROKEN only on a bounds failure after the move, which parse_packet()
 * rules out.
 */
static __always_inline enum decap_result decap_strip(struct xdp_md *ctx, const struct decap_pkt *pkt) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  bool tagged = pkt->l2_len > sizeof(struct ethhdr);
  struct ethhdr *eth = data;
  struct vlan_hdr *vlan = (void *)(eth + 1);
  struct ethhdr saved_eth;
  struct vlan_hdr saved_vlan;

  /* parse_packet() saw far more than this; the verifier does not remember it. */
  if ((void *)(vlan + 1) > data_end)
    return DECAP_UNTOUCHED;
  __builtin_memcpy(&saved_eth, eth, sizeof(saved_eth));
  __builtin_memcpy(&saved_vlan, vlan, sizeof(saved_vlan));
  if (tagged)
    saved_vlan.encap_proto = pkt->inner_proto;
  else
    saved_eth.h_proto = pkt->inner_proto;

  if (bpf_xdp_adjust_head(ctx, (int)pkt->outer_len))
    return DECAP_UNTOUCHED;

  data = (void *)(long)ctx->data;
  data_end = (void *)(long)ctx->data_end;
  eth = data;
  vlan = (void *)(eth + 1);
  /* The L2 header and a whole inner header are still there (>= 14 + 20 bytes);
   * adjust_head invalidated every packet pointer, so the verifier needs it again. */
  if ((void *)(vlan + 1) > data_end)
    return DECAP_BROKEN;
  __builtin_memcpy(eth, &saved_eth, sizeof(saved_eth));
  if (tagged)
    __builtin_memcpy(vlan, &saved_vlan, sizeof(saved_vlan));
  return DECAP_DONE;
}

/**
 * weir_decap() - strip weir's outer IP header and hand the inner packet to the stack
 * @ctx: the packet
 *
 * Returns: XDP_PASS, for decapsulated and untouched packets alike; XDP_DROP
 * only for a packet decap_strip() left broken (which cannot happen).
 */
SEC("xdp")
int weir_decap(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  __u64 frame_len = data_end - data;
  struct decap_pkt pkt = {};

  if (parse_packet(data, data_end, &pkt))
    goto pass;
  switch (decap_strip(ctx, &pkt)) {
  case DECAP_DONE:
    decap_count(pkt.stat, pkt.inner_len);
    return XDP_PASS;
  case DECAP_UNTOUCHED:
    goto pass;
  default:
    return XDP_DROP;
  }
pass:
  decap_count(WEIR_DECAP_STAT_PASS, frame_len);
  return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
