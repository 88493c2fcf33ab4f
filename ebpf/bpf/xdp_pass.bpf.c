/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * xdp_pass.bpf.c — weir_pass, an XDP program that passes every packet.
 *
 * It exists for veth pairs in tests and namespace topologies: a veth delivers
 * the frames its peer sends with XDP_TX (or XDP_REDIRECT) only when the
 * receiving veth has an XDP program attached, because only then does the veth
 * driver set up the NAPI rings those frames travel on. Attaching this program
 * to the receiving end makes the balancer's XDP_TX frames arrive, and changes
 * nothing else.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int weir_pass(struct xdp_md *ctx) {
  return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
