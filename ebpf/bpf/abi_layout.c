/*
 * abi_layout.c — a host program, built and run by build.rs, that prints the
 * layout of weir_abi.h as Rust: every struct's size and field offsets, every
 * constant's value and every map name. ebpf/src/abi.rs tests compare the
 * weir-abi crate with these tables, so the C and Rust sides of the ABI cannot
 * drift.
 */
#include <stddef.h>
#include <stdio.h>

#include <linux/in.h>

#include "weir_abi.h"

#define SIZE(s) printf("    (\"%s\", %zu),\n", #s, sizeof(struct s))
#define FIELD(s, f) printf("    (\"%s.%s\", %zu),\n", #s, #f, offsetof(struct s, f))
#define CONST(c) printf("    (\"%s\", %llu),\n", #c, (unsigned long long)(c))
/* A map name macro expands to a bare identifier: stringify it after expansion. */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define MAP(m) printf("    (\"%s\", \"%s\"),\n", #m, STRINGIFY(m))

int main(void) {
  /* One struct (or a few constants) a line: read as tables. */
  /* clang-format off */
  printf("/// (name, size or offset) of every ABI struct and field, as C lays them out.\n");
  printf("pub const C_LAYOUT: &[(&str, usize)] = &[\n");
  SIZE(vip_key); FIELD(vip_key, addr); FIELD(vip_key, port); FIELD(vip_key, proto);
  FIELD(vip_key, family);
  SIZE(vip_meta); FIELD(vip_meta, flags); FIELD(vip_meta, vip_num); FIELD(vip_meta, conn_tag);
  SIZE(real_def); FIELD(real_def, addr); FIELD(real_def, flags);
  SIZE(conn_key); FIELD(conn_key, src); FIELD(conn_key, conn_tag); FIELD(conn_key, sport);
  FIELD(conn_key, dport);
  SIZE(conn_entry); FIELD(conn_entry, real_index); FIELD(conn_entry, atime_ns);
  SIZE(lb_ctl); FIELD(lb_ctl, default_mac);
  SIZE(lb_counter); FIELD(lb_counter, v1); FIELD(lb_counter, v2);
  SIZE(global_stats); FIELD(global_stats, stat);
  SIZE(vip_filter); FIELD(vip_filter, vips); FIELD(vip_filter, portless);
  SIZE(ring_slots); FIELD(ring_slots, real);
  SIZE(hc_ctl); FIELD(hc_ctl, ifindex); FIELD(hc_ctl, mtu); FIELD(hc_ctl, src_mac);
  FIELD(hc_ctl, dst_mac); FIELD(hc_ctl, src_v4); FIELD(hc_ctl, src_v6);
  SIZE(hc_stats); FIELD(hc_stats, processed); FIELD(hc_stats, dropped); FIELD(hc_stats, skipped);
  FIELD(hc_stats, too_big);
  printf("];\n\n");
  printf("/// (name, value) of every ABI constant, as C defines them.\n");
  printf("pub const C_CONSTANTS: &[(&str, u64)] = &[\n");
  CONST(VIP_F_NO_SPORT); CONST(VIP_F_NO_LRU); CONST(VIP_F_QUIC_VIP); CONST(VIP_F_DPORT_HASH);
  CONST(VIP_F_SRC_ROUTING); CONST(VIP_F_LOCAL_VIP); CONST(VIP_F_GLOBAL_LRU);
  CONST(VIP_F_HASH_SRC_DST_PORT); CONST(VIP_F_UDP_STABLE_ROUTING);
  CONST(VIP_F_UDP_FLOW_MIGRATION); CONST(VIP_F_SUPPORTED);
  CONST(REAL_F_IPV6); CONST(REAL_F_LOCAL_REAL);
  CONST(WEIR_FAMILY_V4); CONST(WEIR_FAMILY_V6); CONST(WEIR_RING_SLOTS_PER_ELEM);
  CONST(WEIR_DEFAULT_RING_SIZE); CONST(WEIR_DEFAULT_MAX_VIPS); CONST(WEIR_DEFAULT_MAX_REALS);
  CONST(WEIR_DEFAULT_CONNS); CONST(WEIR_DEFAULT_MTU); CONST(WEIR_UDP_CONN_TIMEOUT_NS);
  CONST(WEIR_MAX_CONN_RATE); CONST(WEIR_REAL_NONE);
  CONST(WEIR_ICMP_TTL); CONST(WEIR_ICMP_QUOTE_V4); CONST(WEIR_ICMP_QUOTE_V6);
  CONST(WEIR_VIP_FILTER_BITS); CONST(WEIR_VIP_FILTER_SIZE); CONST(WEIR_FILTER_MULT);
  CONST(WEIR_STAT_LRU); CONST(WEIR_STAT_LRU_MISS); CONST(WEIR_STAT_LRU_FALLBACK);
  CONST(WEIR_STAT_CH_DROP); CONST(WEIR_STAT_ENCAP_FAIL); CONST(WEIR_STAT_ICMP_TOOBIG);
  CONST(WEIR_STAT_ICMP_FWD); CONST(WEIR_STAT_NOT_BALANCED); CONST(WEIR_STAT_NEW_CONN_RATE);
  CONST(WEIR_STAT_XDP_TOTAL); CONST(WEIR_STAT_XDP_TX); CONST(WEIR_STAT_XDP_DROP);
  CONST(WEIR_STAT_XDP_PASS); CONST(WEIR_STAT_BAD_LEN); CONST(WEIR_STAT_MAX);
  CONST(WEIR_DECAP_STAT_V4); CONST(WEIR_DECAP_STAT_V6); CONST(WEIR_DECAP_STAT_PASS);
  CONST(WEIR_DECAP_STAT_MAX);
  /* The VIP protocols' numbers, as the datapath compares them. */
  CONST(IPPROTO_TCP); CONST(IPPROTO_UDP);
  printf("];\n\n");
  printf("/// (macro, map name) of every map name, as C spells them.\n");
  printf("pub const C_MAP_NAMES: &[(&str, &str)] = &[\n");
  MAP(WEIR_MAP_VIPS); MAP(WEIR_MAP_REALS); MAP(WEIR_MAP_CH_RINGS); MAP(WEIR_MAP_CONNS);
  MAP(WEIR_MAP_CTL); MAP(WEIR_MAP_VIP_STATS); MAP(WEIR_MAP_REAL_STATS); MAP(WEIR_MAP_STATS);
  MAP(WEIR_MAP_VIP_FILTER); MAP(WEIR_MAP_DECAP_STATS);
  MAP(WEIR_MAP_HC_REALS); MAP(WEIR_MAP_HC_CTL); MAP(WEIR_MAP_HC_KEYS); MAP(WEIR_MAP_HC_KEY_PKTS);
  MAP(WEIR_MAP_HC_STATS);
  printf("];\n\n");
  /* clang-format on */
  /* Buckets of a few addresses, so the Rust twin of vip_filter_bucket is checked. */
  printf("/// (address words as loaded, bucket) from C's vip_filter_bucket.\n");
  printf("pub const C_FILTER_BUCKETS: &[([u32; 4], u32)] = &[\n");
  const __u32 samples[][4] = {
      {0x0100000a, 0, 0, 0}, {0x01ffc80a, 0, 0, 0}, {0xb80d0120, 0, 0, 0x01000000}, {0xffffffff, 1, 2, 3}};
  for (unsigned i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
    printf("    ([%u, %u, %u, %u], %u),\n", samples[i][0], samples[i][1], samples[i][2], samples[i][3],
           vip_filter_bucket(samples[i]));
  printf("];\n");
  return 0;
}
