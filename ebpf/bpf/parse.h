/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * parse.h — the balancer's packet parsing: Ethernet (one 802.1Q/802.1ad tag,
 * through l2.h), IPv4, IPv6, TCP, UDP, and the ICMP errors whose embedded
 * header names a VIP flow.
 * Each parse_* helper begins with its bounds check and fills struct packet.
 */
#ifndef WEIR_PARSE_H
#define WEIR_PARSE_H

#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "ip.h"
#include "l2.h"
#include "weir_abi.h"

#define PKT_F_SYN (1U << 0)  /* TCP SYN: always takes the consistent-hash path */
#define PKT_F_ICMP (1U << 1) /* an ICMP error about a flow; flow holds its swapped tuple */
#define PKT_F_VLAN (1U << 2) /* one VLAN tag sits between Ethernet and IP */

/* Outcome of parsing, when it is not "go on balancing". */
enum parse_result {
  PARSE_OK = 0,
  PARSE_PASS,       /* not for the balancer: hand to the kernel untouched */
  PARSE_V4_OPTIONS, /* IPv4 with options: not balanced, counted, passed */
  PARSE_FRAGMENT,   /* a fragment: not balanced, counted, passed */
};

/* ICMP and ICMPv6 share this header layout (linux/icmp.h drags in libc headers). */
struct icmp_hdr {
  __u8 type;
  __u8 code;
  __be16 checksum;
  __be32 rest; /* unused, or the MTU of a packet-too-big */
};

#define ICMP_DEST_UNREACH 3
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2

/* A flow's 5-tuple, as parsed (network byte order). */
struct flow {
  __be32 src[4];
  __be32 dst[4];
  __be16 sport;
  __be16 dport;
  __u8 proto;
};

/* What the balancer knows about a packet once parsed. */
struct packet {
  struct flow flow;   /* as received; the VIP's flags reshape it before hashing */
  __be32 client_tail; /* last 4 bytes of the client address (outer source seed) */
  __be16 client_port; /* the client's port (outer source seed) */
  /* The IP packet's length as its header states it, header included. 32
   * bits: an IPv6 payload_len of 65535 plus the 40-byte header overflows 16. */
  __u32 l3_len;
  __u32 frame_l3_len; /* bytes the frame holds from the IP header on */
  __u16 l2_len;       /* Ethernet header plus VLAN tag: 14 or 18 */
  __u8 tos;           /* copied to the outer header */
  __u8 flags;         /* PKT_F_* */
  __u8 is_v6;
};

/**
 * parse_eth - find the network protocol, skipping one VLAN tag (parse_l2).
 * @pkt: receives l2_len and PKT_F_VLAN
 * Returns: the ethertype (network order), or 0 when the frame is too short.
 */
static __always_inline __be16 parse_eth(void *data, void *data_end, struct packet *pkt) {
  __u32 l2_len = 0;
  __be16 proto = parse_l2(data, data_end, &l2_len);

  pkt->l2_len = l2_len;
  if (l2_len > sizeof(struct ethhdr))
    pkt->flags |= PKT_F_VLAN;
  return proto;
}

/**
 * parse_ports - read the TCP or UDP ports at @l4 into the flow.
 * Returns: false when the header is truncated or the protocol is neither.
 */
static __always_inline bool parse_ports(void *l4, void *data_end, struct packet *pkt) {
  if (pkt->flow.proto == IPPROTO_TCP) {
    struct tcphdr *tcp = l4;
    if ((void *)(tcp + 1) > data_end)
      return false;
    if (tcp->syn)
      pkt->flags |= PKT_F_SYN;
    pkt->flow.sport = tcp->source;
    pkt->flow.dport = tcp->dest;
    return true;
  }
  if (pkt->flow.proto == IPPROTO_UDP) {
    struct udphdr *udp = l4;
    if ((void *)(udp + 1) > data_end)
      return false;
    pkt->flow.sport = udp->source;
    pkt->flow.dport = udp->dest;
    return true;
  }
  return false;
}

/**
 * parse_icmp_v4 - an ICMP destination-unreachable about a flow from a VIP.
 * @icmp: the ICMP header (bounds unchecked)
 *
 * The embedded header is the real's reply (VIP -> client). Swapping it gives
 * the client's flow (client -> VIP), which hashes to the same real as the flow.
 */
static __always_inline enum parse_result parse_icmp_v4(void *icmp, void *data_end, struct packet *pkt) {
  struct icmp_hdr *hdr = icmp;
  if ((void *)(hdr + 1) > data_end)
    return PARSE_PASS;
  if (hdr->type != ICMP_DEST_UNREACH)
    return PARSE_PASS;
  struct iphdr *inner = (void *)(hdr + 1);
  if ((void *)(inner + 1) > data_end || inner->ihl != 5)
    return PARSE_PASS;
  __be16 *ports = (void *)(inner + 1);
  if ((void *)(ports + 2) > data_end)
    return PARSE_PASS;
  if (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP)
    return PARSE_PASS;
  pkt->flow.proto = inner->protocol;
  pkt->flow.src[0] = inner->daddr;
  pkt->flow.dst[0] = inner->saddr;
  pkt->flow.sport = ports[1];
  pkt->flow.dport = ports[0];
  pkt->flags |= PKT_F_ICMP;
  return PARSE_OK;
}

/**
 * parse_icmp_v6 - an ICMPv6 destination-unreachable or packet-too-big about a
 * flow from a VIP; see parse_icmp_v4.
 */
static __always_inline enum parse_result parse_icmp_v6(void *icmp, void *data_end, struct packet *pkt) {
  struct icmp_hdr *hdr = icmp;
  if ((void *)(hdr + 1) > data_end)
    return PARSE_PASS;
  if (hdr->type != ICMPV6_DEST_UNREACH && hdr->type != ICMPV6_PKT_TOOBIG)
    return PARSE_PASS;
  struct ipv6hdr *inner = (void *)(hdr + 1);
  if ((void *)(inner + 1) > data_end)
    return PARSE_PASS;
  __be16 *ports = (void *)(inner + 1);
  if ((void *)(ports + 2) > data_end)
    return PARSE_PASS;
  if (inner->nexthdr != IPPROTO_TCP && inner->nexthdr != IPPROTO_UDP)
    return PARSE_PASS;
  pkt->flow.proto = inner->nexthdr;
  __builtin_memcpy(pkt->flow.src, &inner->daddr, 16);
  __builtin_memcpy(pkt->flow.dst, &inner->saddr, 16);
  pkt->flow.sport = ports[1];
  pkt->flow.dport = ports[0];
  pkt->flags |= PKT_F_ICMP;
  return PARSE_OK;
}

/**
 * parse_v4 - an IPv4 packet carrying TCP, UDP or an ICMP error.
 * @l3: the IPv4 header (bounds unchecked)
 * Returns: PARSE_OK with the flow filled in, or why the packet is not balanced.
 */
static __always_inline enum parse_result parse_v4(void *l3, void *data_end, struct packet *pkt) {
  struct iphdr *iph = l3;
  if ((void *)(iph + 1) > data_end)
    return PARSE_PASS;
  if (iph->version != 4 || iph->ihl < 5) /* malformed: the kernel's to judge */
    return PARSE_PASS;
  if (iph->ihl != 5)
    return PARSE_V4_OPTIONS;
  if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
    return PARSE_FRAGMENT;
  pkt->tos = iph->tos;
  pkt->l3_len = bpf_ntohs(iph->tot_len);
  pkt->flow.proto = iph->protocol;
  if (iph->protocol == IPPROTO_ICMP)
    return parse_icmp_v4(iph + 1, data_end, pkt);
  pkt->flow.src[0] = iph->saddr;
  pkt->flow.dst[0] = iph->daddr;
  return parse_ports(iph + 1, data_end, pkt) ? PARSE_OK : PARSE_PASS;
}

/**
 * parse_v6 - an IPv6 packet carrying TCP, UDP or an ICMPv6 error directly
 * (no extension headers but a fragment header, which is counted).
 * @l3: the IPv6 header (bounds unchecked)
 */
static __always_inline enum parse_result parse_v6(void *l3, void *data_end, struct packet *pkt) {
  struct ipv6hdr *ip6h = l3;
  if ((void *)(ip6h + 1) > data_end || ip6h->version != 6)
    return PARSE_PASS;
  pkt->is_v6 = 1;
  pkt->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
  pkt->l3_len = (__u32)bpf_ntohs(ip6h->payload_len) + sizeof(*ip6h);
  pkt->flow.proto = ip6h->nexthdr;
  if (ip6h->nexthdr == IPPROTO_FRAGMENT)
    return PARSE_FRAGMENT;
  if (ip6h->nexthdr == IPPROTO_ICMPV6)
    return parse_icmp_v6(ip6h + 1, data_end, pkt);
  __builtin_memcpy(pkt->flow.src, &ip6h->saddr, 16);
  __builtin_memcpy(pkt->flow.dst, &ip6h->daddr, 16);
  return parse_ports(ip6h + 1, data_end, pkt) ? PARSE_OK : PARSE_PASS;
}

#endif /* WEIR_PARSE_H */
