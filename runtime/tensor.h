// defines: herd_dtype, herd_device, herd_storage, herd_tensor, HERD_MAX_DIMS,
//          herd_dtype_size, herd_dtype_name, herd_dtype_parse, herd_device_name,
//          herd_storage_new, herd_storage_wrap, herd_storage_retain, herd_storage_release,
//          herd_tensor_new, herd_tensor_wrap, herd_tensor_free, herd_tensor_view,
//          herd_tensor_narrow, herd_tensor_select, herd_tensor_transpose, herd_tensor_reshape,
//          herd_tensor_contiguous, herd_tensor_copy, herd_tensor_to,
//          herd_tensor_numel, herd_tensor_is_contiguous, herd_tensor_data, herd_tensor_nbytes,
//          herd_tensor_get, herd_tensor_set, herd_tensor_shape_string, herd_tensor_fill,
//          herd_f32_to_bf16, herd_bf16_to_f32, herd_f32_to_f16, herd_f16_to_f32
//
// Tensors: a dtype, a device, a shape of up to 4 dims and strides (in elements) over a
// reference-counted storage. Views (narrow, select, transpose, reshape) share the storage.
// Kernels take contiguous f32 data unless they say otherwise (herd_tensor_contiguous).
#ifndef HERD_TENSOR_H
#define HERD_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define HERD_MAX_DIMS 4

typedef enum herd_dtype { HERD_F32, HERD_BF16, HERD_F16, HERD_I32, HERD_U8 } herd_dtype;
typedef enum herd_device { HERD_CPU, HERD_CUDA } herd_device;

size_t herd_dtype_size(herd_dtype dtype);
const char *herd_dtype_name(herd_dtype dtype);  // "f32", "bf16", "f16", "i32", "u8"
// Parses a dtype name (also "float32", "bfloat16", "float16", "int32", "uint8").
int herd_dtype_parse(const char *name, herd_dtype *out);
const char *herd_device_name(herd_device device);

// A block of memory shared by tensors. `release` frees `data` (free, munmap, cudaFree...).
typedef struct herd_storage {
  void *data;
  size_t bytes;
  herd_device device;
  int refcount;
  void (*release)(struct herd_storage *storage);
  void *context;  // for `release` (e.g. the mmap'd region of a safetensors file)
} herd_storage;

// Zeroed memory of `bytes` on `device` (cuda: "built without CUDA" until that backend lands).
int herd_storage_new(herd_storage **out, size_t bytes, herd_device device);
// Wraps memory owned elsewhere; `release` (may be NULL) is called when the last ref goes.
int herd_storage_wrap(herd_storage **out, void *data, size_t bytes, herd_device device,
                      void (*release)(herd_storage *), void *context);
void herd_storage_retain(herd_storage *storage);
void herd_storage_release(herd_storage *storage);

typedef struct herd_tensor {
  herd_storage *storage;
  size_t offset;  // of the first element, in elements
  herd_dtype dtype;
  int ndim;  // 0 (a scalar) .. HERD_MAX_DIMS
  int64_t shape[HERD_MAX_DIMS];
  int64_t stride[HERD_MAX_DIMS];  // in elements
} herd_tensor;

// A new contiguous zero-filled tensor.
int herd_tensor_new(herd_tensor **out, herd_dtype dtype, herd_device device, int ndim,
                    const int64_t *shape);
// A contiguous tensor over `storage` from `offset` (elements); checks that it fits.
int herd_tensor_wrap(herd_tensor **out, herd_storage *storage, size_t offset, herd_dtype dtype,
                     int ndim, const int64_t *shape);
void herd_tensor_free(herd_tensor *t);  // drops one storage reference; NULL is fine

// Views share `t`'s storage.
int herd_tensor_view(herd_tensor **out, const herd_tensor *t);
int herd_tensor_narrow(herd_tensor **out, const herd_tensor *t, int dim, int64_t start,
                       int64_t length);
int herd_tensor_select(herd_tensor **out, const herd_tensor *t, int dim, int64_t index);
int herd_tensor_transpose(herd_tensor **out, const herd_tensor *t, int dim0, int dim1);
// Same elements, new shape; `t` must be contiguous. One dim may be -1 (inferred).
int herd_tensor_reshape(herd_tensor **out, const herd_tensor *t, int ndim, const int64_t *shape);

// A contiguous copy (or a view when `t` already is contiguous).
int herd_tensor_contiguous(herd_tensor **out, const herd_tensor *t);
// Copies src into dst element by element (same shape; any strides; converts dtypes).
int herd_tensor_copy(herd_tensor *dst, const herd_tensor *src);
// A contiguous copy in another dtype (bf16 and f16 round to nearest even).
int herd_tensor_to(herd_tensor **out, const herd_tensor *t, herd_dtype dtype);
int herd_tensor_fill(herd_tensor *t, double value);

int64_t herd_tensor_numel(const herd_tensor *t);
size_t herd_tensor_nbytes(const herd_tensor *t);  // numel * dtype size
int herd_tensor_is_contiguous(const herd_tensor *t);
// Address of the first element (cpu tensors).
void *herd_tensor_data(const herd_tensor *t);

// One element as a double; `index` has t->ndim entries (0-based), bounds are checked.
int herd_tensor_get(const herd_tensor *t, const int64_t *index, double *value);
int herd_tensor_set(herd_tensor *t, const int64_t *index, double value);

// "(2,3)" into buf; returns buf.
const char *herd_tensor_shape_string(const herd_tensor *t, char *buf, size_t size);

uint16_t herd_f32_to_bf16(float value);  // round to nearest even; NaN stays NaN
float herd_bf16_to_f32(uint16_t bits);
uint16_t herd_f32_to_f16(float value);  // round to nearest even; overflow gives inf
float herd_f16_to_f32(uint16_t bits);

#endif
