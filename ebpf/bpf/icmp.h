/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * icmp.h — the ICMP errors the balancer sends itself: "fragmentation needed"
 * (ICMPv4 type 3 code 4) and "packet too big" (ICMPv6 type 2), in answer to
 * a VIP packet that would not fit the egress link once encapsulated. The
 * wire format is Katran's (send_icmp_too_big): the frame is cut to its L2
 * header and the first WEIR_ICMP_QUOTE_V4/V6 bytes of its IP packet, an IP
 * and an ICMP header are pushed in front of that quote, the reply goes from
 * the VIP back to the client (TTL / hop limit WEIR_ICMP_TTL, TOS 0, no DF),
 * and the Ethernet addresses are swapped so that XDP_TX hands it back to the
 * router it came from. A VLAN tag stays as it was.
 */
#ifndef WEIR_ICMP_H
#define WEIR_ICMP_H

#include <stdbool.h>

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "csum.h"
#include "parse.h"
#include "weir_abi.h"

#define ICMP_FRAG_NEEDED 4 /* code of ICMP_DEST_UNREACH: fragmentation needed and DF set */

/* What the reply puts in front of the quote: an IP header and an ICMP header. */
#define ICMP_REPLY_HDRS_V4 (sizeof(struct iphdr) + sizeof(struct icmp_hdr))
#define ICMP_REPLY_HDRS_V6 (sizeof(struct ipv6hdr) + sizeof(struct icmp_hdr))

/* The MTU check leaves at least 1280 - 40 bytes of IP packet (weir_mtu >=
 * 1280): more than either quote, so the frame never has to grow. */
_Static_assert(WEIR_ICMP_QUOTE_V6 < 1280 - 40, "a too-big packet is longer than its quote");
/* bpf_csum_diff sums whole 32-bit words. */
_Static_assert((sizeof(struct icmp_hdr) + WEIR_ICMP_QUOTE_V4) % 4 == 0, "ICMPv4 message in words");
_Static_assert((sizeof(struct icmp_hdr) + WEIR_ICMP_QUOTE_V6) % 4 == 0, "ICMPv6 message in words");

/**
 * icmp_reshape - cut the frame to its L2 header and @quote bytes of IP
 * packet, then make room for @hdrs bytes of new headers between the two.
 * @pkt: the parsed packet (l2_len, frame_l3_len, PKT_F_VLAN)
 *
 * The L2 header is rewritten at the new front with its addresses swapped;
 * the quoted IP packet stays where it is, right behind the new headers.
 * Returns: the start of the new IP header, or NULL when the frame cannot be
 * reshaped (the caller drops).
 */
static __always_inline void *icmp_reshape(struct xdp_md *ctx, const struct packet *pkt, __u32 quote,
                                          int hdrs) {
  if (bpf_xdp_adjust_tail(ctx, -(int)(pkt->frame_l3_len - quote)))
    return NULL;
  if (bpf_xdp_adjust_head(ctx, -hdrs))
    return NULL;
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  struct ethhdr *old = data + hdrs;
  /* Covers the old L2 header (at most 18 bytes) and the new one. */
  if ((void *)old + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) > data_end)
    return NULL;
  /* hdrs >= 28 > 18, so the old and new L2 headers do not overlap. */
  __builtin_memcpy(eth->h_dest, old->h_source, ETH_ALEN);
  __builtin_memcpy(eth->h_source, old->h_dest, ETH_ALEN);
  eth->h_proto = old->h_proto;
  if (pkt->flags & PKT_F_VLAN) {
    struct vlan_hdr *vlan = (void *)(eth + 1);
    struct vlan_hdr *old_vlan = (void *)(old + 1);
    vlan->tci = old_vlan->tci;
    vlan->encap_proto = old_vlan->encap_proto;
    return vlan + 1;
  }
  return eth + 1;
}

/**
 * icmp_too_big_v4 - answer an IPv4 packet with "fragmentation needed".
 * @mtu: the next-hop MTU to report: the largest IP packet that fits
 * Returns: true when the frame holds the reply (send it with XDP_TX).
 */
static __always_inline bool icmp_too_big_v4(struct xdp_md *ctx, const struct packet *pkt, __u16 mtu) {
  struct iphdr *iph = icmp_reshape(ctx, pkt, WEIR_ICMP_QUOTE_V4, ICMP_REPLY_HDRS_V4);
  if (!iph)
    return false;
  void *data_end = (void *)(long)ctx->data_end;
  struct icmp_hdr *icmp = (void *)(iph + 1);
  struct iphdr *quoted = (void *)(icmp + 1);
  if ((void *)quoted + WEIR_ICMP_QUOTE_V4 > data_end)
    return false;
  icmp->type = ICMP_DEST_UNREACH;
  icmp->code = ICMP_FRAG_NEEDED;
  icmp->checksum = 0;
  icmp->rest = bpf_htonl(mtu); /* 16 bits unused, then the next-hop MTU */
  __s64 sum = bpf_csum_diff(NULL, 0, (void *)icmp, sizeof(*icmp) + WEIR_ICMP_QUOTE_V4, 0);
  icmp->checksum = csum_fold((__u32)sum);

  iph->version = 4;
  iph->ihl = sizeof(*iph) >> 2;
  iph->tos = 0;
  iph->tot_len = bpf_htons(ICMP_REPLY_HDRS_V4 + WEIR_ICMP_QUOTE_V4);
  iph->id = 0;
  iph->frag_off = 0;
  iph->ttl = WEIR_ICMP_TTL;
  iph->protocol = IPPROTO_ICMP;
  iph->check = 0;
  iph->saddr = quoted->daddr;
  iph->daddr = quoted->saddr;
  iph->check = csum_ipv4_header(iph);
  return true;
}

/**
 * icmp_too_big_v6 - answer an IPv6 packet with "packet too big".
 * @mtu: the MTU to report: the largest IP packet that fits
 * Returns: true when the frame holds the reply (send it with XDP_TX).
 */
static __always_inline bool icmp_too_big_v6(struct xdp_md *ctx, const struct packet *pkt, __u32 mtu) {
  struct ipv6hdr *ip6h = icmp_reshape(ctx, pkt, WEIR_ICMP_QUOTE_V6, ICMP_REPLY_HDRS_V6);
  if (!ip6h)
    return false;
  void *data_end = (void *)(long)ctx->data_end;
  struct icmp_hdr *icmp = (void *)(ip6h + 1);
  struct ipv6hdr *quoted = (void *)(icmp + 1);
  if ((void *)quoted + WEIR_ICMP_QUOTE_V6 > data_end)
    return false;
  __u32 len = sizeof(*icmp) + WEIR_ICMP_QUOTE_V6;
  ip6h->version = 6;
  ip6h->priority = 0;
  __builtin_memset(ip6h->flow_lbl, 0, sizeof(ip6h->flow_lbl));
  ip6h->payload_len = bpf_htons(len);
  ip6h->nexthdr = IPPROTO_ICMPV6;
  ip6h->hop_limit = WEIR_ICMP_TTL;
  __builtin_memcpy(&ip6h->saddr, &quoted->daddr, 16);
  __builtin_memcpy(&ip6h->daddr, &quoted->saddr, 16);

  icmp->type = ICMPV6_PKT_TOOBIG;
  icmp->code = 0;
  icmp->checksum = 0;
  icmp->rest = bpf_htonl(mtu);
  /* The pseudo-header's length and next header, as 32-bit words. */
  __be32 pseudo[2] = {bpf_htonl(len), bpf_htonl(IPPROTO_ICMPV6)};
  __s64 sum = bpf_csum_diff(NULL, 0, (void *)&ip6h->saddr, 32, 0);
  sum = bpf_csum_diff(NULL, 0, pseudo, sizeof(pseudo), (__u32)sum);
  sum = bpf_csum_diff(NULL, 0, (void *)icmp, len, (__u32)sum);
  icmp->checksum = csum_fold((__u32)sum);
  return true;
}

#endif /* WEIR_ICMP_H */
