/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * outer.h — the outer IP header of a packet tunnelled to a real, written the
 * same way by the balancer (encap.h) and the healthcheck program: the inner
 * TOS carried over, TTL / hop limit WEIR_ENCAP_TTL, no fragmentation, and a
 * source derived from the client's address and port, as Katran does, so that
 * the real's NIC spreads flows over its receive queues.
 */
#ifndef WEIR_OUTER_H
#define WEIR_OUTER_H

#include <stdbool.h>

#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "csum.h"
#include "weir_abi.h"

/* outer_src_v4 - 172.16.x.y: x.y are the client address's last two bytes XOR its port. */
static __always_inline __be32 outer_src_v4(__be32 client_tail, __be16 client_port) {
  __be32 saddr;
  __u8 *s = (__u8 *)&saddr;
  __u8 *tail = (__u8 *)&client_tail;
  __u8 *port = (__u8 *)&client_port;
  s[0] = 172;
  s[1] = 16;
  s[2] = tail[2] ^ port[0];
  s[3] = tail[3] ^ port[1];
  return saddr;
}

/* outer_src_v6 - 100::x:y (the discard prefix, 0100::/64): the client's last
 * 4 bytes, the first two XOR its port. */
static __always_inline void outer_src_v6(struct in6_addr *saddr, __be32 client_tail, __be16 client_port) {
  __u8 *s = saddr->in6_u.u6_addr8;
  __u8 *tail = (__u8 *)&client_tail;
  __u8 *port = (__u8 *)&client_port;
  __builtin_memset(s, 0, 16);
  s[0] = 0x01;
  s[12] = tail[0] ^ port[0];
  s[13] = tail[1] ^ port[1];
  s[14] = tail[2];
  s[15] = tail[3];
}

/* outer_v4 - an IPv4-in-IPv4 header for @l3_len bytes of inner packet. */
static __always_inline void outer_v4(struct iphdr *iph, __u8 tos, __u32 l3_len, __be32 saddr, __be32 daddr) {
  iph->version = 4;
  iph->ihl = sizeof(*iph) >> 2;
  iph->tos = tos;
  iph->tot_len = bpf_htons(l3_len + sizeof(*iph));
  iph->id = 0;
  iph->frag_off = 0;
  iph->ttl = WEIR_ENCAP_TTL;
  iph->protocol = IPPROTO_IPIP;
  iph->check = 0;
  iph->saddr = saddr;
  iph->daddr = daddr;
  iph->check = csum_ipv4_header(iph);
}

/* outer_v6 - an IPv6 header for @l3_len bytes of inner packet (@inner_v6:
 * IPv6-in-IPv6, else IPv4-in-IPv6); the caller writes the source. */
static __always_inline void outer_v6(struct ipv6hdr *ip6h, __u8 tos, __u32 l3_len, bool inner_v6,
                                     const __be32 daddr[4]) {
  ip6h->version = 6;
  ip6h->priority = tos >> 4;
  ip6h->flow_lbl[0] = (tos & 0x0f) << 4;
  ip6h->flow_lbl[1] = 0;
  ip6h->flow_lbl[2] = 0;
  ip6h->payload_len = bpf_htons(l3_len);
  ip6h->nexthdr = inner_v6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
  ip6h->hop_limit = WEIR_ENCAP_TTL;
  __builtin_memcpy(&ip6h->daddr, daddr, 16);
}

#endif /* WEIR_OUTER_H */
