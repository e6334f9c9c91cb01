// defines: herd_sha256, herd_sha256_init, herd_sha256_update, herd_sha256_final,
//          herd_sha256_hex, herd_sha256_file
//
// SHA-256 (FIPS 180-4), used to fingerprint scripts and artifacts in the run history.
#ifndef HERD_SHA256_H
#define HERD_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct herd_sha256 {
  uint32_t state[8];
  uint64_t length;  // bytes hashed so far
  uint8_t block[64];
  size_t block_used;
} herd_sha256;

void herd_sha256_init(herd_sha256 *ctx);
void herd_sha256_update(herd_sha256 *ctx, const void *data, size_t len);
void herd_sha256_final(herd_sha256 *ctx, uint8_t digest[32]);
// Lower-case hex digest of a buffer into hex[65] (NUL-terminated).
void herd_sha256_hex(const void *data, size_t len, char hex[65]);
// Digest and size of a file; HERD_EIO with the path and reason when it cannot be read.
int herd_sha256_file(const char *path, char hex[65], uint64_t *bytes);

#endif
