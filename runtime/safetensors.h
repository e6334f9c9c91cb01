// defines: herd_safetensors, herd_safetensors_open, herd_safetensors_parse,
//          herd_safetensors_close, herd_safetensors_count, herd_safetensors_name,
//          herd_safetensors_find, herd_safetensors_tensor, herd_safetensors_metadata,
//          herd_safetensors_save
//
// safetensors files (Hugging Face): an 8-byte little-endian header length, a JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {"key": "value"}}, then the tensor bytes. Files are mmap'd on read; the
// header is validated before any tensor byte is touched (offsets in bounds and not
// overlapping, byte lengths matching dtype and shape, header size sane).
#ifndef HERD_SAFETENSORS_H
#define HERD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

typedef struct herd_safetensors herd_safetensors;

// Opens and validates `path` (errors name the file and the tensor or field at fault).
int herd_safetensors_open(herd_safetensors **out, const char *path);
// Validates and indexes a file image held in memory (`data` must outlive the result);
// `origin` names it in error messages.
int herd_safetensors_parse(herd_safetensors **out, const uint8_t *data, size_t size,
                           const char *origin);
// Tensors made from the file keep its mapping alive after close.
void herd_safetensors_close(herd_safetensors *file);

int herd_safetensors_count(const herd_safetensors *file);
const char *herd_safetensors_name(const herd_safetensors *file, int index);  // sorted by name
int herd_safetensors_find(const herd_safetensors *file, const char *name);   // index or -1
// A cpu tensor viewing tensor `index` of the file (no copy for mmap'd files).
int herd_safetensors_tensor(const herd_safetensors *file, int index, herd_tensor **out);
// A "__metadata__" string value, or NULL.
const char *herd_safetensors_metadata(const herd_safetensors *file, const char *key);

// Writes `count` named contiguous cpu tensors (names unique) and optional string metadata
// (`metadata_keys`/`metadata_values`, `n_metadata` pairs) to `path`: written to a temporary
// name beside it, fsynced, then renamed, so a crash or a full disk never leaves a torn file.
int herd_safetensors_save(const char *path, int count, const char *const *names,
                          const herd_tensor *const *tensors, int n_metadata,
                          const char *const *metadata_keys, const char *const *metadata_values);

#endif
