/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * ip.h — what both programs need of IPv4 that uapi leaves to the kernel's
 * internal headers: the fragment bits of iphdr.frag_off (host order).
 */
#ifndef WEIR_IP_H
#define WEIR_IP_H

#define IP_MF 0x2000     /* "more fragments" */
#define IP_OFFSET 0x1FFF /* fragment offset, in 8-byte units */

#endif /* WEIR_IP_H */
