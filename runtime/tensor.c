// Tensors over reference-counted storages. See tensor.h.
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

// ---------------------------------------------------------------- dtypes

size_t herd_dtype_size(herd_dtype dtype) {
  switch (dtype) {
    case HERD_F32:
    case HERD_I32:
      return 4;
    case HERD_BF16:
    case HERD_F16:
      return 2;
    case HERD_U8:
      return 1;
  }
  return 0;
}

const char *herd_dtype_name(herd_dtype dtype) {
  static const char *const names[] = {"f32", "bf16", "f16", "i32", "u8"};
  return dtype <= HERD_U8 ? names[dtype] : "unknown";
}

int herd_dtype_parse(const char *name, herd_dtype *out) {
  static const struct {
    const char *name;
    herd_dtype dtype;
  } known[] = {{"f32", HERD_F32},       {"float32", HERD_F32}, {"bf16", HERD_BF16},
               {"bfloat16", HERD_BF16}, {"f16", HERD_F16},     {"float16", HERD_F16},
               {"i32", HERD_I32},       {"int32", HERD_I32},   {"u8", HERD_U8},
               {"uint8", HERD_U8}};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (name && strcmp(name, known[i].name) == 0) {
      *out = known[i].dtype;
      return HERD_OK;
    }
  return herd_seterr(HERD_EINVAL, "unknown dtype '%s' (known: f32, bf16, f16, i32, u8)",
                     name ? name : "(null)");
}

const char *herd_device_name(herd_device device) {
  return device == HERD_CPU ? "cpu" : device == HERD_CUDA ? "cuda" : "unknown";
}

// ---------------------------------------------------------------- half-precision conversions

static uint32_t float_bits(float value) {
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  return bits;
}

static float bits_float(uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

// bf16 is the top half of an f32; rounding adds 0x7fff plus the lowest kept bit (ties to even).
uint16_t herd_f32_to_bf16(float value) {
  uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x0040u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

float herd_bf16_to_f32(uint16_t bits) {
  return bits_float((uint32_t)bits << 16);
}

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
uint16_t herd_f32_to_f16(float value) {
  uint32_t bits = float_bits(value);
  uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (magnitude >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: inf
  if (magnitude < 0x38800000u) {                        // below 2^-14: subnormal or zero
    if (magnitude < 0x33000000u) return sign;           // below half the smallest: zero
    // value = mantissa * 2^(exponent - 150) and a subnormal is k * 2^-24: k = mantissa >> shift
    int shift = 126 - (int)(magnitude >> 23);  // 14..24
    uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    uint32_t kept = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u))) kept++;  // may carry into the normals
    return sign | (uint16_t)kept;
  }
  uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);  // ties to even at bit 13
  return sign | (uint16_t)((rounded - 0x38000000u) >> 13);           // rebias 127 -> 15
}

float herd_f16_to_f32(uint16_t bits) {
  uint32_t sign = (uint32_t)(bits & 0x8000u) << 16;
  uint32_t exponent = (bits >> 10) & 0x1fu;
  uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    float magnitude = (float)mantissa * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// ---------------------------------------------------------------- storages

static void release_malloced(herd_storage *storage) {
  free(storage->data);
}

int herd_storage_new(herd_storage **out, size_t bytes, herd_device device) {
  *out = NULL;
  if (device == HERD_CUDA)
    return herd_seterr(HERD_EINVAL, "cannot allocate a cuda tensor: herd was built without CUDA");
  void *data = calloc(bytes ? bytes : 1, 1);
  if (!data) return herd_seterr(HERD_ENOMEM, "out of memory allocating %zu bytes", bytes);
  int status = herd_storage_wrap(out, data, bytes, device, release_malloced, NULL);
  if (status) free(data);
  return status;
}

int herd_storage_wrap(herd_storage **out, void *data, size_t bytes, herd_device device,
                      void (*release)(herd_storage *), void *context) {
  herd_storage *storage = malloc(sizeof *storage);
  if (!storage) return herd_seterr(HERD_ENOMEM, "out of memory");
  *storage = (herd_storage){data, bytes, device, 1, release, context};
  *out = storage;
  return HERD_OK;
}

void herd_storage_retain(herd_storage *storage) {
  storage->refcount++;
}

void herd_storage_release(herd_storage *storage) {
  if (!storage || --storage->refcount > 0) return;
  if (storage->release) storage->release(storage);
  free(storage);
}

// ---------------------------------------------------------------- tensors

static int check_shape(int ndim, const int64_t *shape, int64_t *numel) {
  if (ndim < 0 || ndim > HERD_MAX_DIMS)
    return herd_seterr(HERD_EINVAL, "a tensor has 0 to %d dims (got %d)", HERD_MAX_DIMS, ndim);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return herd_seterr(HERD_EINVAL, "dim %d has negative size %lld", i, (long long)shape[i]);
    if (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])
      return herd_seterr(HERD_EINVAL, "tensor too large");
    n *= shape[i];
  }
  *numel = n;
  return HERD_OK;
}

static void set_contiguous_strides(herd_tensor *t) {
  int64_t stride = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    t->stride[i] = stride;
    stride *= t->shape[i];
  }
}

static int alloc_tensor(herd_tensor **out, const herd_tensor *like) {
  herd_tensor *t = malloc(sizeof *t);
  if (!t) return herd_seterr(HERD_ENOMEM, "out of memory");
  *t = *like;
  herd_storage_retain(t->storage);
  *out = t;
  return HERD_OK;
}

int herd_tensor_wrap(herd_tensor **out, herd_storage *storage, size_t offset, herd_dtype dtype,
                     int ndim, const int64_t *shape) {
  *out = NULL;
  int64_t numel;
  int status = check_shape(ndim, shape, &numel);
  if (status) return status;
  size_t size = herd_dtype_size(dtype);
  if (offset > storage->bytes / size || (size_t)numel > storage->bytes / size - offset)
    return herd_seterr(HERD_EINVAL, "%lld %s elements at offset %zu do not fit in %zu bytes",
                       (long long)numel, herd_dtype_name(dtype), offset, storage->bytes);
  herd_tensor t = {.storage = storage, .offset = offset, .dtype = dtype, .ndim = ndim};
  for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
  set_contiguous_strides(&t);
  return alloc_tensor(out, &t);
}

int herd_tensor_new(herd_tensor **out, herd_dtype dtype, herd_device device, int ndim,
                    const int64_t *shape) {
  *out = NULL;
  int64_t numel;
  int status = check_shape(ndim, shape, &numel);
  if (status) return status;
  herd_storage *storage;
  if ((status = herd_storage_new(&storage, (size_t)numel * herd_dtype_size(dtype), device)))
    return status;
  status = herd_tensor_wrap(out, storage, 0, dtype, ndim, shape);
  herd_storage_release(storage);  // the tensor holds its own reference
  return status;
}

void herd_tensor_free(herd_tensor *t) {
  if (!t) return;
  herd_storage_release(t->storage);
  free(t);
}

int64_t herd_tensor_numel(const herd_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

size_t herd_tensor_nbytes(const herd_tensor *t) {
  return (size_t)herd_tensor_numel(t) * herd_dtype_size(t->dtype);
}

int herd_tensor_is_contiguous(const herd_tensor *t) {
  int64_t stride = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    if (t->shape[i] != 1 && t->stride[i] != stride) return 0;
    stride *= t->shape[i];
  }
  return 1;
}

void *herd_tensor_data(const herd_tensor *t) {
  return (char *)t->storage->data + t->offset * herd_dtype_size(t->dtype);
}

const char *herd_tensor_shape_string(const herd_tensor *t, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "(");
  for (int i = 0; i < t->ndim && used < size; i++)
    used +=
        (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "," : "", (long long)t->shape[i]);
  if (used < size) snprintf(buf + used, size - used, ")");
  return buf;
}

// ---------------------------------------------------------------- views

int herd_tensor_view(herd_tensor **out, const herd_tensor *t) {
  return alloc_tensor(out, t);
}

static int check_dim(const herd_tensor *t, int dim, const char *what) {
  if (dim >= 0 && dim < t->ndim) return HERD_OK;
  return herd_seterr(HERD_EINVAL, "%s: dim %d out of range for a %d-dim tensor", what, dim,
                     t->ndim);
}

int herd_tensor_narrow(herd_tensor **out, const herd_tensor *t, int dim, int64_t start,
                       int64_t length) {
  *out = NULL;
  int status = check_dim(t, dim, "narrow");
  if (status) return status;
  if (start < 0 || length < 0 || start + length > t->shape[dim])
    return herd_seterr(HERD_EINVAL, "narrow: [%lld, %lld) out of range for dim %d of size %lld",
                       (long long)start, (long long)(start + length), dim,
                       (long long)t->shape[dim]);
  herd_tensor view = *t;
  view.offset += (size_t)(start * t->stride[dim]);
  view.shape[dim] = length;
  return alloc_tensor(out, &view);
}

int herd_tensor_select(herd_tensor **out, const herd_tensor *t, int dim, int64_t index) {
  *out = NULL;
  int status = check_dim(t, dim, "select");
  if (status) return status;
  if (index < 0 || index >= t->shape[dim])
    return herd_seterr(HERD_EINVAL, "index %lld out of range for dim %d of size %lld",
                       (long long)index, dim, (long long)t->shape[dim]);
  herd_tensor view = *t;
  view.offset += (size_t)(index * t->stride[dim]);
  for (int i = dim; i < t->ndim - 1; i++) {
    view.shape[i] = t->shape[i + 1];
    view.stride[i] = t->stride[i + 1];
  }
  view.ndim--;
  return alloc_tensor(out, &view);
}

int herd_tensor_transpose(herd_tensor **out, const herd_tensor *t, int dim0, int dim1) {
  *out = NULL;
  int status = check_dim(t, dim0, "transpose");
  if (!status) status = check_dim(t, dim1, "transpose");
  if (status) return status;
  herd_tensor view = *t;
  view.shape[dim0] = t->shape[dim1], view.shape[dim1] = t->shape[dim0];
  view.stride[dim0] = t->stride[dim1], view.stride[dim1] = t->stride[dim0];
  return alloc_tensor(out, &view);
}

int herd_tensor_reshape(herd_tensor **out, const herd_tensor *t, int ndim, const int64_t *shape) {
  *out = NULL;
  if (!herd_tensor_is_contiguous(t))
    return herd_seterr(HERD_EINVAL, "reshape needs a contiguous tensor (use contiguous first)");
  if (ndim < 0 || ndim > HERD_MAX_DIMS)
    return herd_seterr(HERD_EINVAL, "a tensor has 0 to %d dims (got %d)", HERD_MAX_DIMS, ndim);
  int64_t resolved[HERD_MAX_DIMS], known = 1;
  int inferred = -1;
  for (int i = 0; i < ndim; i++) {
    resolved[i] = shape[i];
    if (shape[i] == -1 && inferred < 0)
      inferred = i;
    else if (shape[i] < 0)
      return herd_seterr(HERD_EINVAL, "reshape: bad size %lld for dim %d", (long long)shape[i], i);
    else
      known *= shape[i];
  }
  int64_t numel = herd_tensor_numel(t);
  if (inferred >= 0) resolved[inferred] = known ? numel / known : 0;
  int64_t total;
  int status = check_shape(ndim, resolved, &total);
  if (status) return status;
  char have[64];
  if (total != numel)
    return herd_seterr(HERD_EINVAL, "reshape: %lld elements %s cannot take a shape of %lld",
                       (long long)numel, herd_tensor_shape_string(t, have, sizeof have),
                       (long long)total);
  herd_tensor view = *t;
  view.ndim = ndim;
  for (int i = 0; i < ndim; i++) view.shape[i] = resolved[i];
  set_contiguous_strides(&view);
  return alloc_tensor(out, &view);
}

// ---------------------------------------------------------------- element access and copies

static double load_element(const void *base, herd_dtype dtype, int64_t i) {
  switch (dtype) {
    case HERD_F32:
      return ((const float *)base)[i];
    case HERD_BF16:
      return herd_bf16_to_f32(((const uint16_t *)base)[i]);
    case HERD_F16:
      return herd_f16_to_f32(((const uint16_t *)base)[i]);
    case HERD_I32:
      return ((const int32_t *)base)[i];
    case HERD_U8:
      return ((const uint8_t *)base)[i];
  }
  return 0;
}

// Integers saturate and truncate toward zero; NaN becomes 0 (C leaves the cast undefined).
static void store_element(void *base, herd_dtype dtype, int64_t i, double value) {
  switch (dtype) {
    case HERD_F32:
      ((float *)base)[i] = (float)value;
      break;
    case HERD_BF16:
      ((uint16_t *)base)[i] = herd_f32_to_bf16((float)value);
      break;
    case HERD_F16:
      ((uint16_t *)base)[i] = herd_f32_to_f16((float)value);
      break;
    case HERD_I32:
      ((int32_t *)base)[i] = isnan(value)             ? 0
                             : value >= 2147483647.0  ? INT32_MAX
                             : value <= -2147483648.0 ? INT32_MIN
                                                      : (int32_t)value;
      break;
    case HERD_U8:
      ((uint8_t *)base)[i] = isnan(value) || value <= 0 ? 0 : value >= 255 ? 255 : (uint8_t)value;
      break;
  }
}

static int require_cpu(const herd_tensor *t, const char *what) {
  if (t->storage->device == HERD_CPU) return HERD_OK;
  return herd_seterr(HERD_EINVAL, "%s needs a cpu tensor (got %s)", what,
                     herd_device_name(t->storage->device));
}

static int element_offset(const herd_tensor *t, const int64_t *index, int64_t *offset) {
  int64_t at = 0;
  for (int i = 0; i < t->ndim; i++) {
    if (index[i] < 0 || index[i] >= t->shape[i])
      return herd_seterr(HERD_EINVAL, "index %lld out of range for dim %d of size %lld",
                         (long long)index[i], i, (long long)t->shape[i]);
    at += index[i] * t->stride[i];
  }
  *offset = at;
  return HERD_OK;
}

int herd_tensor_get(const herd_tensor *t, const int64_t *index, double *value) {
  int64_t at;
  int status = require_cpu(t, "get");
  if (!status) status = element_offset(t, index, &at);
  if (!status) *value = load_element(herd_tensor_data(t), t->dtype, at);
  return status;
}

int herd_tensor_set(herd_tensor *t, const int64_t *index, double value) {
  int64_t at;
  int status = require_cpu(t, "set");
  if (!status) status = element_offset(t, index, &at);
  if (!status) store_element(herd_tensor_data(t), t->dtype, at, value);
  return status;
}

// Offset (in elements) of the i-th element in row-major order of t's shape.
static int64_t strided_offset(const herd_tensor *t, int64_t i) {
  int64_t at = 0;
  for (int d = t->ndim - 1; d >= 0; d--) {
    at += (i % t->shape[d]) * t->stride[d];
    i /= t->shape[d];
  }
  return at;
}

static int same_shape(const herd_tensor *a, const herd_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

int herd_tensor_copy(herd_tensor *dst, const herd_tensor *src) {
  int status = require_cpu(dst, "copy");
  if (!status) status = require_cpu(src, "copy");
  if (status) return status;
  char want[64], got[64];
  if (!same_shape(dst, src))
    return herd_seterr(HERD_EINVAL, "copy: shape %s into %s",
                       herd_tensor_shape_string(src, got, sizeof got),
                       herd_tensor_shape_string(dst, want, sizeof want));
  int64_t n = herd_tensor_numel(src);
  void *out = herd_tensor_data(dst);
  const void *in = herd_tensor_data(src);
  if (dst->dtype == src->dtype && herd_tensor_is_contiguous(dst) &&
      herd_tensor_is_contiguous(src)) {
    memmove(out, in, (size_t)n * herd_dtype_size(src->dtype));
    return HERD_OK;
  }
  for (int64_t i = 0; i < n; i++)
    store_element(out, dst->dtype, strided_offset(dst, i),
                  load_element(in, src->dtype, strided_offset(src, i)));
  return HERD_OK;
}

int herd_tensor_to(herd_tensor **out, const herd_tensor *t, herd_dtype dtype) {
  int status = herd_tensor_new(out, dtype, t->storage->device, t->ndim, t->shape);
  if (!status) status = herd_tensor_copy(*out, t);
  if (status) {
    herd_tensor_free(*out);
    *out = NULL;
  }
  return status;
}

int herd_tensor_contiguous(herd_tensor **out, const herd_tensor *t) {
  if (herd_tensor_is_contiguous(t)) return herd_tensor_view(out, t);
  return herd_tensor_to(out, t, t->dtype);
}

int herd_tensor_fill(herd_tensor *t, double value) {
  int status = require_cpu(t, "fill");
  if (status) return status;
  int64_t n = herd_tensor_numel(t);
  void *base = herd_tensor_data(t);
  for (int64_t i = 0; i < n; i++) store_element(base, t->dtype, strided_offset(t, i), value);
  return HERD_OK;
}
