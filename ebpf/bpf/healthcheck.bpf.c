/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * healthcheck.bpf.c — the healthcheck program, Katran's healthchecking_kern:
 * a TC egress classifier on the main interface. A local prober sends each
 * probe to the VIP from a socket marked (SO_MARK) with a mark that
 * weir_hc_reals maps to a real; this program encapsulates such a packet
 * toward that real exactly as the balancer encapsulates VIP traffic (IPIP,
 * IP6IP6, IPv4-in-IPv6; the same outer header), so a probe proves that the
 * real serves the VIP through the tunnel, not just that it is up.
 *
 * Unmarked packets, and marks no real has, are not probes: they leave
 * untouched (TC_ACT_UNSPEC) and count as skipped. A probe that cannot leave
 * as the balancer would send it (no control entry yet, too big once
 * encapsulated, an IPv6 probe to an IPv4 real) is dropped and counted, so the
 * probe fails rather than reaching the real some other way.
 */
#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "outer.h"
#include "weir_abi.h"

/* Probe marks -> the real each probes (address and REAL_F_IPV6, as weir_reals). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, __u32);
  __type(value, struct real_def);
  __uint(max_entries, WEIR_DEFAULT_MAX_REALS);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_HC_REALS SEC(".maps");

/* Where probes leave and how they are addressed (one entry, set by the agent). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct hc_ctl);
  __uint(max_entries, 1);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_HC_CTL SEC(".maps");

/* Healthcheck keys (Katran's hc_key_map): VIPs whose probes are counted, by index. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, struct vip_key);
  __type(value, __u32);
  __uint(max_entries, WEIR_DEFAULT_MAX_VIPS);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_HC_KEYS SEC(".maps");

/* Probes sent per healthcheck key index. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, __u64);
  __uint(max_entries, WEIR_DEFAULT_MAX_VIPS);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_HC_KEY_PKTS SEC(".maps");

/* The program's counters (Katran's hc_stats). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, struct hc_stats);
  __uint(max_entries, 1);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_HC_STATS SEC(".maps");

/* What the outer header needs of the probe. */
struct probe {
  struct vip_key vip; /* destination: the VIP the probe is for */
  __be32 src_tail;    /* the last 4 bytes of the probe's source address */
  __be16 sport;       /* its source port (0 when not TCP or UDP) */
  __u8 tos;           /* its TOS / traffic class, carried to the outer header */
  __u8 is_v6;
};

/* parse_probe - read the probe's addresses and ports (headers may be paged). */
static __always_inline bool parse_probe(struct __sk_buff *skb, struct probe *p) {
  __be16 proto;
  if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
    return false;
  __u32 l4;
  if (proto == bpf_htons(ETH_P_IP)) {
    struct iphdr iph;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &iph, sizeof(iph)))
      return false;
    p->vip.addr[0] = iph.daddr;
    p->vip.proto = iph.protocol;
    p->vip.family = WEIR_FAMILY_V4;
    p->src_tail = iph.saddr;
    p->tos = iph.tos;
    l4 = ETH_HLEN + iph.ihl * 4;
  } else if (proto == bpf_htons(ETH_P_IPV6)) {
    struct ipv6hdr ip6h;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6h, sizeof(ip6h)))
      return false;
    __builtin_memcpy(p->vip.addr, &ip6h.daddr, 16);
    p->vip.proto = ip6h.nexthdr;
    p->vip.family = WEIR_FAMILY_V6;
    p->src_tail = ip6h.saddr.in6_u.u6_addr32[3];
    p->tos = (ip6h.priority << 4) | (ip6h.flow_lbl[0] >> 4);
    p->is_v6 = 1;
    l4 = ETH_HLEN + sizeof(ip6h);
  } else {
    return false;
  }
  if (p->vip.proto == IPPROTO_TCP || p->vip.proto == IPPROTO_UDP) {
    __be16 ports[2];
    if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
      return false;
    p->sport = ports[0];
    p->vip.port = ports[1];
  }
  return true;
}

static __always_inline int drop(struct hc_stats *stats) {
  stats->dropped += 1;
  return TC_ACT_SHOT;
}

SEC("classifier")
int weir_healthcheck(struct __sk_buff *skb) {
  __u32 zero = 0;
  struct hc_stats *stats = bpf_map_lookup_elem(&WEIR_MAP_HC_STATS, &zero);
  if (!stats)
    return TC_ACT_UNSPEC;
  __u32 mark = skb->mark;
  struct real_def *real = mark ? bpf_map_lookup_elem(&WEIR_MAP_HC_REALS, &mark) : NULL;
  if (!real) {
    stats->skipped += 1;
    return TC_ACT_UNSPEC;
  }
  struct hc_ctl *ctl = bpf_map_lookup_elem(&WEIR_MAP_HC_CTL, &zero);
  if (!ctl || !ctl->ifindex)
    return drop(stats);
  struct probe p = {};
  if (!parse_probe(skb, &p))
    return drop(stats);
  bool to_v6 = real->flags & REAL_F_IPV6;
  /* The balancer never sends IPv6 to an IPv4 real: neither does a probe. */
  if (p.is_v6 && !to_v6)
    return drop(stats);
  __u32 outer_len = to_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
  __u32 l3_len = skb->len - ETH_HLEN;
  if (l3_len + outer_len > ctl->mtu) {
    stats->too_big += 1;
    return drop(stats);
  }

  /* The encapsulated probe must not be taken for a probe again. */
  skb->mark = 0;
  __u64 flags =
      BPF_F_ADJ_ROOM_FIXED_GSO | (to_v6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4);
  if (bpf_skb_adjust_room(skb, outer_len, BPF_ADJ_ROOM_MAC, flags))
    return drop(stats);
  void *data = (void *)(long)skb->data;
  void *data_end = (void *)(long)skb->data_end;
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) + sizeof(struct ipv6hdr) > data_end)
    return drop(stats);
  __builtin_memcpy(eth->h_source, ctl->src_mac, ETH_ALEN);
  __builtin_memcpy(eth->h_dest, ctl->dst_mac, ETH_ALEN);
  /* The balancer's outer header; the source is katran_src_v4/v6 when set. */
  if (to_v6) {
    struct ipv6hdr *ip6h = (void *)(eth + 1);
    eth->h_proto = bpf_htons(ETH_P_IPV6);
    outer_v6(ip6h, p.tos, l3_len, p.is_v6, real->addr);
    if (ctl->src_v6[0] | ctl->src_v6[1] | ctl->src_v6[2] | ctl->src_v6[3])
      __builtin_memcpy(&ip6h->saddr, ctl->src_v6, 16);
    else
      outer_src_v6(&ip6h->saddr, p.src_tail, p.sport);
  } else {
    __be32 saddr = ctl->src_v4 ? ctl->src_v4 : outer_src_v4(p.src_tail, p.sport);
    eth->h_proto = bpf_htons(ETH_P_IP);
    outer_v4((void *)(eth + 1), p.tos, l3_len, saddr, real->addr[0]);
  }

  stats->processed += 1;
  __u32 *key = bpf_map_lookup_elem(&WEIR_MAP_HC_KEYS, &p.vip);
  if (key) {
    __u64 *sent = bpf_map_lookup_elem(&WEIR_MAP_HC_KEY_PKTS, key);
    if (sent)
      *sent += 1;
  }
  /* Already leaving by the main interface: go on; otherwise move there. */
  if (skb->ifindex == ctl->ifindex)
    return TC_ACT_OK;
  return bpf_redirect(ctl->ifindex, 0);
}

char _license[] SEC("license") = "GPL";
