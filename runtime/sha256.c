// SHA-256 as specified in FIPS 180-4, section 6.2.
#include "sha256.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

// First 32 bits of the fractional parts of the cube roots of the first 64 primes (4.2.2).
static const uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t rotr(uint32_t x, int n) {
  return (x >> n) | (x << (32 - n));
}

static void compress_block(uint32_t state[8], const uint8_t block[64]) {
  uint32_t w[64];
  for (int t = 0; t < 16; t++)
    w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
           (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
  for (int t = 16; t < 64; t++) {
    uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
  uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
  for (int t = 0; t < 64; t++) {
    uint32_t sigma1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    uint32_t choose = (e & f) ^ (~e & g);
    uint32_t t1 = h + sigma1 + choose + round_constants[t] + w[t];
    uint32_t sigma0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = sigma0 + majority;
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  state[0] += a, state[1] += b, state[2] += c, state[3] += d;
  state[4] += e, state[5] += f, state[6] += g, state[7] += h;
}

void herd_sha256_init(herd_sha256 *ctx) {
  static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(ctx->state, initial, sizeof initial);
  ctx->length = 0;
  ctx->block_used = 0;
}

void herd_sha256_update(herd_sha256 *ctx, const void *data, size_t len) {
  const uint8_t *bytes = data;
  ctx->length += len;
  while (len > 0) {
    size_t take = 64 - ctx->block_used;
    if (take > len) take = len;
    memcpy(ctx->block + ctx->block_used, bytes, take);
    ctx->block_used += take, bytes += take, len -= take;
    if (ctx->block_used == 64) {
      compress_block(ctx->state, ctx->block);
      ctx->block_used = 0;
    }
  }
}

void herd_sha256_final(herd_sha256 *ctx, uint8_t digest[32]) {
  uint64_t bit_length = ctx->length * 8;
  uint8_t pad = 0x80;
  herd_sha256_update(ctx, &pad, 1);
  pad = 0;
  while (ctx->block_used != 56) herd_sha256_update(ctx, &pad, 1);
  uint8_t length_be[8];
  for (int i = 0; i < 8; i++) length_be[i] = (uint8_t)(bit_length >> (56 - 8 * i));
  herd_sha256_update(ctx, length_be, 8);
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(ctx->state[i] >> (24 - 8 * j));
}

static void digest_to_hex(const uint8_t digest[32], char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 15];
  }
  hex[64] = '\0';
}

void herd_sha256_hex(const void *data, size_t len, char hex[65]) {
  herd_sha256 ctx;
  uint8_t digest[32];
  herd_sha256_init(&ctx);
  herd_sha256_update(&ctx, data, len);
  herd_sha256_final(&ctx, digest);
  digest_to_hex(digest, hex);
}

int herd_sha256_file(const char *path, char hex[65], uint64_t *bytes) {
  FILE *file = fopen(path, "rb");
  if (!file) return herd_seterr(HERD_EIO, "cannot read '%s': %s", path, strerror(errno));
  herd_sha256 ctx;
  herd_sha256_init(&ctx);
  uint8_t buffer[1 << 16];
  size_t got;
  while ((got = fread(buffer, 1, sizeof buffer, file)) > 0) herd_sha256_update(&ctx, buffer, got);
  int read_failed = ferror(file);
  fclose(file);
  if (read_failed) return herd_seterr(HERD_EIO, "error while reading '%s'", path);
  if (bytes) *bytes = ctx.length;
  uint8_t digest[32];
  herd_sha256_final(&ctx, digest);
  digest_to_hex(digest, hex);
  return HERD_OK;
}
