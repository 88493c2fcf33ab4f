/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * jhash.h — Bob Jenkins' lookup3 hash (public domain), the kernel's and
 * Katran's flow hash, in the word-oriented forms the balancer needs. Every node
 * runs the same function with the same seeds, so every node hashes a flow to
 * the same ring slot.
 */
#ifndef WEIR_JHASH_H
#define WEIR_JHASH_H

#include <linux/types.h>

#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 word, unsigned int shift) {
  return (word << shift) | (word >> ((-shift) & 31));
}

/* The kernel's jhash.h layout: three statements a line. */
/* clang-format off */
#define __jhash_mix(a, b, c)                                                   \
  {                                                                            \
    a -= c; a ^= rol32(c, 4); c += b;                                          \
    b -= a; b ^= rol32(a, 6); a += c;                                          \
    c -= b; c ^= rol32(b, 8); b += a;                                          \
    a -= c; a ^= rol32(c, 16); c += b;                                         \
    b -= a; b ^= rol32(a, 19); a += c;                                         \
    c -= b; c ^= rol32(b, 4); b += a;                                          \
  }

#define __jhash_final(a, b, c)                                                 \
  {                                                                            \
    c ^= b; c -= rol32(b, 14);                                                 \
    a ^= c; a -= rol32(c, 11);                                                 \
    b ^= a; b -= rol32(a, 25);                                                 \
    c ^= b; c -= rol32(b, 16);                                                 \
    a ^= c; a -= rol32(c, 4);                                                  \
    b ^= a; b -= rol32(a, 14);                                                 \
    c ^= b; c -= rol32(b, 24);                                                 \
  }
/* clang-format on */

/* jhash_3words - hash three 32-bit words (the kernel's jhash_3words). */
static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval) {
  a += JHASH_INITVAL;
  b += JHASH_INITVAL;
  c += initval;
  __jhash_final(a, b, c);
  return c;
}

static __always_inline __u32 jhash_2words(__u32 a, __u32 b, __u32 initval) {
  return jhash_3words(a, b, 0, initval);
}

/* jhash_4words - hash four 32-bit words: an IPv6 address (the kernel's jhash2, length 4). */
static __always_inline __u32 jhash_4words(const __u32 *k, __u32 initval) {
  __u32 a, b, c;
  a = b = c = JHASH_INITVAL + (4 << 2) + initval;
  a += k[0];
  b += k[1];
  c += k[2];
  __jhash_mix(a, b, c);
  a += k[3];
  __jhash_final(a, b, c);
  return c;
}

#endif /* WEIR_JHASH_H */
