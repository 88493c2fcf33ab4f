/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * csum.h — checksums. Encapsulation leaves the inner packet untouched, so the
 * only checksum the balancer writes is the outer IPv4 header's.
 */
#ifndef WEIR_CSUM_H
#define WEIR_CSUM_H

#include <linux/ip.h>
#include <linux/types.h>

/* csum_fold - fold a 32-bit one's-complement sum to 16 bits and invert it. */
static __always_inline __u16 csum_fold(__u32 sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (__u16)~sum;
}

/* csum_ipv4_header - the checksum of a 20-byte IPv4 header whose check field is 0. */
static __always_inline __u16 csum_ipv4_header(const struct iphdr *iph) {
  const __u16 *words = (const __u16 *)iph;
  __u32 sum = 0;
#pragma unroll
  for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
    sum += words[i];
  return csum_fold(sum);
}

#endif /* WEIR_CSUM_H */
