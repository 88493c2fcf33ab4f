/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * encap.h — IP-in-IP encapsulation toward a real: IPv4-in-IPv4, IPv6-in-IPv6
 * and IPv4-in-IPv6. The Ethernet header (and VLAN tag) moves to the new front
 * of the frame; its destination becomes the default router's MAC and its
 * source the MAC the packet was sent to (this host's). The outer header
 * itself is outer.h's.
 */
#ifndef WEIR_ENCAP_H
#define WEIR_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "outer.h"
#include "parse.h"
#include "weir_abi.h"

/**
 * encap_push_l2 - grow the frame by @outer_len and rebuild the L2 header.
 * @outer_len: size of the outer IP header about to be written after L2
 * @ethertype: protocol of that outer header (network order)
 * Returns: the start of the room for the outer header, or NULL on failure.
 */
static __always_inline void *encap_push_l2(struct xdp_md *ctx, struct packet *pkt, const struct lb_ctl *ctl,
                                           int outer_len, __be16 ethertype) {
  if (bpf_xdp_adjust_head(ctx, -outer_len))
    return NULL;
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct ethhdr *eth = data;
  struct ethhdr *old = data + outer_len;
  /* Covers the old L2 header (at most 18 bytes) and the new outer header. */
  if ((void *)old + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) > data_end)
    return NULL;
  /* outer_len >= 20 > 18, so the old and new L2 headers do not overlap. */
  __builtin_memcpy(eth->h_source, old->h_dest, ETH_ALEN);
  __builtin_memcpy(eth->h_dest, ctl->default_mac, ETH_ALEN);
  if (pkt->flags & PKT_F_VLAN) {
    struct vlan_hdr *vlan = (void *)(eth + 1);
    struct vlan_hdr *old_vlan = (void *)(old + 1);
    eth->h_proto = old->h_proto;
    vlan->tci = old_vlan->tci;
    vlan->encap_proto = ethertype;
    return vlan + 1;
  }
  eth->h_proto = ethertype;
  return eth + 1;
}

/**
 * encap_v4 - wrap the packet in an IPv4 header addressed to @real (IPv4-in-IPv4).
 * Returns: false when the frame cannot grow (the caller drops and counts).
 */
static __always_inline bool encap_v4(struct xdp_md *ctx, struct packet *pkt, const struct real_def *real,
                                     const struct lb_ctl *ctl) {
  struct iphdr *iph = encap_push_l2(ctx, pkt, ctl, sizeof(*iph), bpf_htons(ETH_P_IP));
  if (!iph)
    return false;
  void *data_end = (void *)(long)ctx->data_end;
  if ((void *)(iph + 1) > data_end)
    return false;
  outer_v4(iph, pkt->tos, pkt->l3_len, outer_src_v4(pkt->client_tail, pkt->client_port), real->addr[0]);
  return true;
}

/**
 * encap_v6 - wrap the packet in an IPv6 header addressed to @real
 * (IPv6-in-IPv6, or IPv4-in-IPv6 for an IPv4 VIP with an IPv6 real).
 * Returns: false when the frame cannot grow (the caller drops and counts).
 */
static __always_inline bool encap_v6(struct xdp_md *ctx, struct packet *pkt, const struct real_def *real,
                                     const struct lb_ctl *ctl) {
  struct ipv6hdr *ip6h = encap_push_l2(ctx, pkt, ctl, sizeof(*ip6h), bpf_htons(ETH_P_IPV6));
  if (!ip6h)
    return false;
  void *data_end = (void *)(long)ctx->data_end;
  if ((void *)(ip6h + 1) > data_end)
    return false;
  outer_v6(ip6h, pkt->tos, pkt->l3_len, pkt->is_v6, real->addr);
  outer_src_v6(&ip6h->saddr, pkt->client_tail, pkt->client_port);
  return true;
}

#endif /* WEIR_ENCAP_H */
