/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * l2.h — what both programs parse before IP: Ethernet and at most one
 * 802.1Q/802.1ad tag. The balancer keeps the tag on the frames it
 * encapsulates; the decapsulation program keeps it on the inner packet.
 */
#ifndef WEIR_L2_H
#define WEIR_L2_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* An 802.1Q/802.1ad tag after the MAC addresses; uapi has no struct for it. */
struct vlan_hdr {
  __be16 tci;
  __be16 encap_proto; /* ethertype of what follows the tag */
};

/**
 * parse_l2() - find the L3 header behind Ethernet and at most one VLAN tag
 * @data: start of the frame
 * @data_end: end of the frame
 * @l2_len: receives the length of the L2 header: 14, or 18 with a tag
 *
 * Returns: the ethertype of the L3 header (network order), or 0 when the frame
 * is too short for its L2 header (@l2_len is then left as it was).
 */
static __always_inline __be16 parse_l2(void *data, void *data_end, __u32 *l2_len) {
  struct ethhdr *eth = data;
  struct vlan_hdr *vlan;

  if ((void *)(eth + 1) > data_end)
    return 0;
  if (eth->h_proto != bpf_htons(ETH_P_8021Q) && eth->h_proto != bpf_htons(ETH_P_8021AD)) {
    *l2_len = sizeof(*eth);
    return eth->h_proto;
  }
  vlan = (void *)(eth + 1);
  if ((void *)(vlan + 1) > data_end)
    return 0;
  *l2_len = sizeof(*eth) + sizeof(*vlan);
  return vlan->encap_proto;
}

#endif /* WEIR_L2_H */
