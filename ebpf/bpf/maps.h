/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * maps.h — every map of the balancer program, pinned by name under the
 * agent's bpffs directory so a restarted agent adopts them. Sizes here are
 * defaults; the agent sets the real ones at load time from its configuration.
 */
#ifndef WEIR_MAPS_H
#define WEIR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "weir_abi.h"

/* VIPs: (address, port, proto) -> flags and vip_num. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __type(key, struct vip_key);
  __type(value, struct vip_meta);
  __uint(max_entries, WEIR_DEFAULT_MAX_VIPS);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_VIPS SEC(".maps");

/* Reals by index; index 0 is never used (WEIR_REAL_NONE). */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct real_def);
  __uint(max_entries, WEIR_DEFAULT_MAX_REALS + 1);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_REALS SEC(".maps");

/*
 * Maglev rings, one of ring_size slots per vip_num, each a real index, stored
 * densely (see struct ring_slots). Mmapable so the agent rewrites changed
 * slots with plain stores instead of one syscall per slot.
 */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct ring_slots);
  __uint(max_entries, (WEIR_DEFAULT_MAX_VIPS * WEIR_DEFAULT_RING_SIZE + 1) / WEIR_RING_SLOTS_PER_ELEM);
  __uint(map_flags, BPF_F_MMAPABLE);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_CH_RINGS SEC(".maps");

/*
 * The connection table. One LRU hash with per-CPU LRU lists: each CPU evicts
 * only what it inserted, as with Katran's per-CPU tables, but an entry is found
 * from any CPU, so a flow keeps its real when RSS moves it to another queue.
 */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __type(key, struct conn_key);
  __type(value, struct conn_entry);
  __uint(max_entries, WEIR_DEFAULT_CONNS);
  __uint(map_flags, BPF_F_NO_COMMON_LRU);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_CONNS SEC(".maps");

/* Which address buckets hold VIPs: see struct vip_filter. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct vip_filter);
  __uint(max_entries, WEIR_VIP_FILTER_SIZE);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_VIP_FILTER SEC(".maps");

/* Run-time settings (one entry): the default router's MAC. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __type(key, __u32);
  __type(value, struct lb_ctl);
  __uint(max_entries, 1);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_CTL SEC(".maps");

/* Per-VIP packets (v1) and L3 bytes (v2), by vip_num. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, struct lb_counter);
  __uint(max_entries, WEIR_DEFAULT_MAX_VIPS);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_VIP_STATS SEC(".maps");

/* Per-real packets (v1) and L3 bytes (v2), by real index. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, struct lb_counter);
  __uint(max_entries, WEIR_DEFAULT_MAX_REALS + 1);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_REAL_STATS SEC(".maps");

/* Global counters: one entry, a struct global_stats indexed by enum weir_stat. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __type(key, __u32);
  __type(value, struct global_stats);
  __uint(max_entries, 1);
  __uint(pinning, LIBBPF_PIN_BY_NAME);
} WEIR_MAP_STATS SEC(".maps");

#endif /* WEIR_MAPS_H */
