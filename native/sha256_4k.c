/*
 * SHA-256 (FIPS 180-4) of whole 4096-byte messages with the x86 SHA
 * extensions; see sha256_4k.h. The state lives in two registers as the
 * instructions want it (ABEF and CDGH); the message schedule in four,
 * rolling: W[g] = msg2(msg1(W[g-4], W[g-3]) + W[g-1..g-2] shifted by one
 * word, W[g-1]) for each group g of four words. A 4096-byte message always
 * ends with the same padding block (0x80, zeros, bit length 32768).
 */
#include "sha256_4k.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>

#define TARGET __attribute__((target("sha,sse4.1,ssse3")))

static const uint32_t K[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* The last block of every 4096-byte message: 0x80, zeros, and 4096 * 8 as a big-endian u64. */
static const uint8_t PAD[64] = {0x80, [62] = 0x80};

int sha256_4k_available(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return ssse3 && sse41 && ((b >> 29) & 1);
}

/* Four rounds of group g (message words w) on state s0 = ABEF, s1 = CDGH. */
#define ROUNDS(s0, s1, w, g)                                                           \
  do {                                                                                 \
    __m128i m_ = _mm_add_epi32((w), _mm_load_si128((const __m128i *)(K + 4 * (g)))); \
    s1 = _mm_sha256rnds2_epu32(s1, s0, m_);                                            \
    m_ = _mm_shuffle_epi32(m_, 0x0E);                                                  \
    s0 = _mm_sha256rnds2_epu32(s0, s1, m_);                                            \
  } while (0)

/* The next message group into wa, from the previous four wa (oldest) .. wd (newest). */
#define SCHEDULE(wa, wb, wc, wd) \
  wa = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(wa, wb), _mm_alignr_epi8(wd, wc, 4)), wd)

#define LOAD(p, i) _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 16 * (i))), BSWAP32)
#define BSWAP32 _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL)

TARGET static void initial(__m128i *abef, __m128i *cdgh) {
  __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)H0), 0xB1);       /* CDAB */
  __m128i s = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(H0 + 4)), 0x1B); /* HGFE */
  *abef = _mm_alignr_epi8(t, s, 8);
  *cdgh = _mm_blend_epi16(s, t, 0xF0);
}

TARGET static void output(__m128i abef, __m128i cdgh, uint8_t *out) {
  __m128i t = _mm_shuffle_epi32(abef, 0x1B); /* FEBA */
  __m128i s = _mm_shuffle_epi32(cdgh, 0xB1); /* DCHG */
  const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
  _mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(_mm_blend_epi16(t, s, 0xF0), bswap)); /* ABCD */
  _mm_storeu_si128((__m128i *)(out + 16), _mm_shuffle_epi8(_mm_alignr_epi8(s, t, 8), bswap)); /* EFGH */
}

TARGET static inline void compress1(__m128i *st, const uint8_t *p) {
  __m128i a0 = st[0], a1 = st[1];
  __m128i w0 = LOAD(p, 0), w1 = LOAD(p, 1), w2 = LOAD(p, 2), w3 = LOAD(p, 3);
  ROUNDS(a0, a1, w0, 0);
  ROUNDS(a0, a1, w1, 1);
  ROUNDS(a0, a1, w2, 2);
  ROUNDS(a0, a1, w3, 3);
  for (int g = 4; g < 16; g += 4) {
    SCHEDULE(w0, w1, w2, w3);
    ROUNDS(a0, a1, w0, g);
    SCHEDULE(w1, w2, w3, w0);
    ROUNDS(a0, a1, w1, g + 1);
    SCHEDULE(w2, w3, w0, w1);
    ROUNDS(a0, a1, w2, g + 2);
    SCHEDULE(w3, w0, w1, w2);
    ROUNDS(a0, a1, w3, g + 3);
  }
  st[0] = _mm_add_epi32(a0, st[0]);
  st[1] = _mm_add_epi32(a1, st[1]);
}

TARGET static inline void compress2(__m128i *st, const uint8_t *p, const uint8_t *q) {
  __m128i a0 = st[0], a1 = st[1], b0 = st[2], b1 = st[3];
  __m128i w0 = LOAD(p, 0), w1 = LOAD(p, 1), w2 = LOAD(p, 2), w3 = LOAD(p, 3);
  __m128i v0 = LOAD(q, 0), v1 = LOAD(q, 1), v2 = LOAD(q, 2), v3 = LOAD(q, 3);
  ROUNDS(a0, a1, w0, 0);
  ROUNDS(b0, b1, v0, 0);
  ROUNDS(a0, a1, w1, 1);
  ROUNDS(b0, b1, v1, 1);
  ROUNDS(a0, a1, w2, 2);
  ROUNDS(b0, b1, v2, 2);
  ROUNDS(a0, a1, w3, 3);
  ROUNDS(b0, b1, v3, 3);
  for (int g = 4; g < 16; g += 4) {
    SCHEDULE(w0, w1, w2, w3);
    SCHEDULE(v0, v1, v2, v3);
    ROUNDS(a0, a1, w0, g);
    ROUNDS(b0, b1, v0, g);
    SCHEDULE(w1, w2, w3, w0);
    SCHEDULE(v1, v2, v3, v0);
    ROUNDS(a0, a1, w1, g + 1);
    ROUNDS(b0, b1, v1, g + 1);
    SCHEDULE(w2, w3, w0, w1);
    SCHEDULE(v2, v3, v0, v1);
    ROUNDS(a0, a1, w2, g + 2);
    ROUNDS(b0, b1, v2, g + 2);
    SCHEDULE(w3, w0, w1, w2);
    SCHEDULE(v3, v0, v1, v2);
    ROUNDS(a0, a1, w3, g + 3);
    ROUNDS(b0, b1, v3, g + 3);
  }
  st[0] = _mm_add_epi32(a0, st[0]);
  st[1] = _mm_add_epi32(a1, st[1]);
  st[2] = _mm_add_epi32(b0, st[2]);
  st[3] = _mm_add_epi32(b1, st[3]);
}

/* Four at a time: the registers spill, but the round unit stays busier still. */
TARGET static inline void compress4(__m128i *st, const uint8_t *const p[4], int off) {
  __m128i a0 = st[0], a1 = st[1], b0 = st[2], b1 = st[3], c0 = st[4], c1 = st[5], d0 = st[6], d1 = st[7];
  const uint8_t *pa = p[0] + off, *pb = p[1] + off, *pc = p[2] + off, *pd = p[3] + off;
  __m128i w0 = LOAD(pa, 0), w1 = LOAD(pa, 1), w2 = LOAD(pa, 2), w3 = LOAD(pa, 3);
  __m128i v0 = LOAD(pb, 0), v1 = LOAD(pb, 1), v2 = LOAD(pb, 2), v3 = LOAD(pb, 3);
  __m128i u0 = LOAD(pc, 0), u1 = LOAD(pc, 1), u2 = LOAD(pc, 2), u3 = LOAD(pc, 3);
  __m128i t0 = LOAD(pd, 0), t1 = LOAD(pd, 1), t2 = LOAD(pd, 2), t3 = LOAD(pd, 3);
#define ROUNDS4(g, w, v, u, t) \
  ROUNDS(a0, a1, w, g);        \
  ROUNDS(b0, b1, v, g);        \
  ROUNDS(c0, c1, u, g);        \
  ROUNDS(d0, d1, t, g)
  ROUNDS4(0, w0, v0, u0, t0);
  ROUNDS4(1, w1, v1, u1, t1);
  ROUNDS4(2, w2, v2, u2, t2);
  ROUNDS4(3, w3, v3, u3, t3);
  for (int g = 4; g < 16; g += 4) {
    SCHEDULE(w0, w1, w2, w3);
    SCHEDULE(v0, v1, v2, v3);
    SCHEDULE(u0, u1, u2, u3);
    SCHEDULE(t0, t1, t2, t3);
    ROUNDS4(g, w0, v0, u0, t0);
    SCHEDULE(w1, w2, w3, w0);
    SCHEDULE(v1, v2, v3, v0);
    SCHEDULE(u1, u2, u3, u0);
    SCHEDULE(t1, t2, t3, t0);
    ROUNDS4(g + 1, w1, v1, u1, t1);
    SCHEDULE(w2, w3, w0, w1);
    SCHEDULE(v2, v3, v0, v1);
    SCHEDULE(u2, u3, u0, u1);
    SCHEDULE(t2, t3, t0, t1);
    ROUNDS4(g + 2, w2, v2, u2, t2);
    SCHEDULE(w3, w0, w1, w2);
    SCHEDULE(v3, v0, v1, v2);
    SCHEDULE(u3, u0, u1, u2);
    SCHEDULE(t3, t0, t1, t2);
    ROUNDS4(g + 3, w3, v3, u3, t3);
  }
#undef ROUNDS4
  st[0] = _mm_add_epi32(a0, st[0]);
  st[1] = _mm_add_epi32(a1, st[1]);
  st[2] = _mm_add_epi32(b0, st[2]);
  st[3] = _mm_add_epi32(b1, st[3]);
  st[4] = _mm_add_epi32(c0, st[4]);
  st[5] = _mm_add_epi32(c1, st[5]);
  st[6] = _mm_add_epi32(d0, st[6]);
  st[7] = _mm_add_epi32(d1, st[7]);
}

TARGET void sha256_4k_x1(const uint8_t *p, uint8_t *out) {
  __m128i st[2];
  initial(&st[0], &st[1]);
  for (int i = 0; i < 4096; i += 64) compress1(st, p + i);
  compress1(st, PAD);
  output(st[0], st[1], out);
}

TARGET void sha256_4k_x2(const uint8_t *p, const uint8_t *q, uint8_t *op, uint8_t *oq) {
  __m128i st[4];
  initial(&st[0], &st[1]);
  st[2] = st[0];
  st[3] = st[1];
  for (int i = 0; i < 4096; i += 64) compress2(st, p + i, q + i);
  compress2(st, PAD, PAD);
  output(st[0], st[1], op);
  output(st[2], st[3], oq);
}

TARGET void sha256_4k_x4(const uint8_t *const p[4], uint8_t *const out[4]) {
  __m128i st[8];
  initial(&st[0], &st[1]);
  for (int i = 2; i < 8; i++) st[i] = st[i & 1];
  for (int i = 0; i < 4096; i += 64) compress4(st, p, i);
  const uint8_t *const pad[4] = {PAD, PAD, PAD, PAD};
  compress4(st, pad, 0);
  for (int i = 0; i < 4; i++) output(st[2 * i], st[2 * i + 1], out[i]);
}

#else /* no SHA extensions to use: callers take OpenSSL's path */

int sha256_4k_available(void) { return 0; }
void sha256_4k_x1(const uint8_t *p, uint8_t *out) { (void)p, (void)out; }
void sha256_4k_x2(const uint8_t *p, const uint8_t *q, uint8_t *op, uint8_t *oq) { (void)p, (void)q, (void)op, (void)oq; }
void sha256_4k_x4(const uint8_t *const p[4], uint8_t *const out[4]) { (void)p, (void)out; }

#endif
