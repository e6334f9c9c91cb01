// The tensor core: shapes, views, copies, element access and dtype conversions.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tensor.h"

static herd_tensor *new_f32(int ndim, const int64_t *shape) {
  herd_tensor *t = NULL;
  cr_assert_eq(herd_tensor_new(&t, HERD_F32, HERD_CPU, ndim, shape), HERD_OK, "%s", herd_errmsg());
  return t;
}

// t[i] = i in row-major order (t contiguous f32)
static void fill_iota(herd_tensor *t) {
  float *data = herd_tensor_data(t);
  for (int64_t i = 0; i < herd_tensor_numel(t); i++) data[i] = (float)i;
}

static double at(const herd_tensor *t, int64_t i0, int64_t i1, int64_t i2) {
  int64_t index[3] = {i0, i1, i2};
  double value = NAN;
  cr_assert_eq(herd_tensor_get(t, index, &value), HERD_OK, "%s", herd_errmsg());
  return value;
}

Test(tensor, new_is_zeroed_and_contiguous) {
  herd_tensor *t = new_f32(3, (int64_t[]){2, 3, 4});
  cr_assert_eq(herd_tensor_numel(t), 24);
  cr_assert_eq(herd_tensor_nbytes(t), 96);
  cr_assert(herd_tensor_is_contiguous(t));
  cr_assert(t->stride[0] == 12 && t->stride[1] == 4 && t->stride[2] == 1);
  for (int i = 0; i < 24; i++) cr_assert_eq(((float *)herd_tensor_data(t))[i], 0.0f);
  char shape[32];
  cr_assert_str_eq(herd_tensor_shape_string(t, shape, sizeof shape), "(2,3,4)");
  herd_tensor_free(t);
}

Test(tensor, bad_shapes_and_devices_are_refused) {
  herd_tensor *t = NULL;
  cr_assert_eq(herd_tensor_new(&t, HERD_F32, HERD_CPU, 5, (int64_t[]){1, 1, 1, 1, 1}), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "0 to 4 dims"), "%s", herd_errmsg());
  cr_assert_eq(herd_tensor_new(&t, HERD_F32, HERD_CPU, 2, (int64_t[]){2, -1}), HERD_EINVAL);
  cr_assert_eq(herd_tensor_new(&t, HERD_F32, HERD_CUDA, 1, (int64_t[]){4}), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "built without"), "%s", herd_errmsg());
  cr_assert_null(t);
  herd_dtype dtype;
  cr_assert_eq(herd_dtype_parse("bfloat16", &dtype), HERD_OK);
  cr_assert_eq(dtype, HERD_BF16);
  cr_assert_eq(herd_dtype_parse("f64", &dtype), HERD_EINVAL);
}

Test(tensor, views_share_storage) {
  herd_tensor *t = new_f32(3, (int64_t[]){2, 3, 4});
  fill_iota(t);
  herd_tensor *row = NULL, *narrow = NULL, *transposed = NULL;
  cr_assert_eq(herd_tensor_select(&row, t, 0, 1), HERD_OK);  // (3,4) = t[1]
  cr_assert_eq(row->ndim, 2);
  cr_assert_eq(at(row, 2, 3, 0) + 0, 23.0);  // extra index ignored beyond ndim
  cr_assert_eq(herd_tensor_narrow(&narrow, t, 2, 1, 2), HERD_OK);  // (2,3,2)
  cr_assert(!herd_tensor_is_contiguous(narrow));
  cr_assert_eq(at(narrow, 1, 2, 1), 1 * 12 + 2 * 4 + 2);
  cr_assert_eq(herd_tensor_transpose(&transposed, t, 0, 2), HERD_OK);  // (4,3,2)
  cr_assert_eq(at(transposed, 3, 1, 1), 1 * 12 + 1 * 4 + 3);
  int64_t index[3] = {0, 0, 1};
  cr_assert_eq(herd_tensor_set(narrow, index, -5.0), HERD_OK);  // writes t[0,0,2]
  cr_assert_eq(at(t, 0, 0, 2), -5.0);
  herd_tensor_free(t);  // views keep the storage alive
  cr_assert_eq(at(transposed, 2, 0, 0), -5.0);
  herd_tensor_free(row);
  herd_tensor_free(narrow);
  herd_tensor_free(transposed);
}

Test(tensor, view_errors_name_the_problem) {
  herd_tensor *t = new_f32(2, (int64_t[]){2, 3}), *v = NULL;
  cr_assert_eq(herd_tensor_select(&v, t, 1, 3), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "index 3 out of range for dim 1 of size 3"), "%s", herd_errmsg());
  cr_assert_eq(herd_tensor_narrow(&v, t, 0, 1, 2), HERD_EINVAL);
  cr_assert_eq(herd_tensor_transpose(&v, t, 0, 2), HERD_EINVAL);
  cr_assert_eq(herd_tensor_get(t, (int64_t[]){2, 0}, &(double){0}), HERD_EINVAL);
  herd_tensor_free(t);
}

Test(tensor, reshape) {
  herd_tensor *t = new_f32(2, (int64_t[]){4, 6}), *r = NULL, *tr = NULL;
  fill_iota(t);
  cr_assert_eq(herd_tensor_reshape(&r, t, 3, (int64_t[]){2, -1, 3}), HERD_OK, "%s", herd_errmsg());
  cr_assert_eq(r->shape[1], 4);
  cr_assert_eq(at(r, 1, 2, 1), 1 * 12 + 2 * 3 + 1);
  herd_tensor_free(r);
  cr_assert_eq(herd_tensor_reshape(&r, t, 2, (int64_t[]){5, 5}), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "24 elements (4,6)"), "%s", herd_errmsg());
  cr_assert_eq(herd_tensor_transpose(&tr, t, 0, 1), HERD_OK);
  cr_assert_eq(herd_tensor_reshape(&r, tr, 1, (int64_t[]){24}), HERD_EINVAL);
  cr_assert(strstr(herd_errmsg(), "contiguous"), "%s", herd_errmsg());
  herd_tensor_free(tr);
  herd_tensor_free(t);
}

Test(tensor, contiguous_copy_of_a_transpose_matches_naive_loop) {
  herd_tensor *t = new_f32(3, (int64_t[]){3, 5, 7}), *tr = NULL, *c = NULL;
  fill_iota(t);
  cr_assert_eq(herd_tensor_transpose(&tr, t, 0, 2), HERD_OK);  // (7,5,3)
  cr_assert_eq(herd_tensor_contiguous(&c, tr), HERD_OK);
  cr_assert(herd_tensor_is_contiguous(c));
  const float *out = herd_tensor_data(c);
  for (int i = 0; i < 7; i++)
    for (int j = 0; j < 5; j++)
      for (int k = 0; k < 3; k++)
        cr_assert_eq(out[(i * 5 + j) * 3 + k], (float)(k * 35 + j * 7 + i));
  herd_tensor_free(c);
  herd_tensor_free(tr);
  herd_tensor_free(t);
}

Test(tensor, integer_conversion_saturates) {
  herd_tensor *t = new_f32(1, (int64_t[]){5}), *i32 = NULL, *u8 = NULL;
  float *data = herd_tensor_data(t);
  data[0] = 3.7f, data[1] = -3.7f, data[2] = 1e20f, data[3] = NAN, data[4] = 300.0f;
  cr_assert_eq(herd_tensor_to(&i32, t, HERD_I32), HERD_OK);
  cr_assert_eq(herd_tensor_to(&u8, t, HERD_U8), HERD_OK);
  const int32_t *ints = herd_tensor_data(i32);
  const uint8_t *bytes = herd_tensor_data(u8);
  cr_assert(ints[0] == 3 && ints[1] == -3 && ints[2] == INT32_MAX && ints[3] == 0);
  cr_assert(bytes[0] == 3 && bytes[1] == 0 && bytes[4] == 255);
  herd_tensor_free(t);
  herd_tensor_free(i32);
  herd_tensor_free(u8);
}

// ---------------------------------------------------------------- bf16 and f16

static float from_bits(uint32_t bits) {
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// Reference rounding by comparison: the nearer of the two neighbours, ties to the even one.
static uint16_t bf16_reference(float x) {
  uint32_t bits;
  memcpy(&bits, &x, 4);
  uint16_t down = (uint16_t)(bits >> 16), up = (uint16_t)(down + 1);
  double lo = herd_bf16_to_f32(down), hi = herd_bf16_to_f32(up);
  double d_lo = fabs((double)x - lo), d_hi = fabs(hi - (double)x);
  if (isinf(hi) && !isinf((double)x)) d_hi = fabs(ldexp(1.0, 128) - fabs((double)x));
  if (d_lo < d_hi) return down;
  if (d_hi < d_lo) return up;
  return (down & 1) ? up : down;
}

Test(dtype, bf16_round_trip_and_rounding) {
  for (uint32_t b = 0; b < 65536; b++) {
    float f = herd_bf16_to_f32((uint16_t)b);
    if (isnan(f)) {
      cr_assert(isnan(herd_bf16_to_f32(herd_f32_to_bf16(f))));
      continue;
    }
    cr_assert_eq(herd_f32_to_bf16(f), b, "bf16 %04x does not survive a round trip", b);
  }
  uint64_t state = 12345;
  for (int i = 0; i < 2000000; i++) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    float x = from_bits((uint32_t)(state >> 32));
    if (isnan(x) || fabsf(x) > 3.38e38f) continue;
    cr_assert_eq(herd_f32_to_bf16(x), bf16_reference(x), "x = %a", (double)x);
  }
  cr_assert_eq(herd_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80, "tie to even (down)");
  cr_assert_eq(herd_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82, "tie to even (up)");
}

static double f16_value(uint16_t h) {  // the definition, independent of herd's bit tricks
  int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
  double magnitude =
      exponent == 0 ? ldexp(mantissa, -24) : ldexp(1.0 + mantissa / 1024.0, exponent - 15);
  if (exponent == 31) magnitude = mantissa ? NAN : INFINITY;
  return sign ? -magnitude : magnitude;
}

// Nearest finite f16 by search over all positive values, ties to even; >= 65520 is inf.
static uint16_t f16_reference(float x) {
  double ax = fabs((double)x);
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  if (ax >= 65520.0) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) {  // largest value <= ax
    uint16_t mid = (uint16_t)((lo + hi + 1) / 2);
    if (f16_value(mid) <= ax)
      lo = mid;
    else
      hi = (uint16_t)(mid - 1);
  }
  uint16_t below = lo, above = (uint16_t)(lo + 1);
  if (f16_value(below) == ax || below == 0x7bff) return sign | below;
  double d_lo = ax - f16_value(below), d_hi = f16_value(above) - ax;
  uint16_t chosen = d_lo < d_hi ? below : d_hi < d_lo ? above : (below & 1) ? above : below;
  return sign | chosen;
}

Test(dtype, f16_round_trip_and_rounding) {
  for (uint32_t h = 0; h < 65536; h++) {
    double expected = f16_value((uint16_t)h);
    float f = herd_f16_to_f32((uint16_t)h);
    if (isnan(expected)) {
      cr_assert(isnan(f));
      continue;
    }
    cr_assert_eq((double)f, expected, "f16 %04x decodes to %a, not %a", h, (double)f, expected);
    cr_assert_eq(herd_f32_to_f16(f), h, "f16 %04x does not survive a round trip", h);
  }
  uint64_t state = 99;
  for (int i = 0; i < 300000; i++) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    // exponents around f16's range, including subnormals and overflow
    float x = ldexpf((float)((state >> 40) & 0xffffff) / 16777216.0f + 0.5f,
                     (int)((state >> 33) % 50) - 30);
    if (state & 1) x = -x;
    cr_assert_eq(herd_f32_to_f16(x), f16_reference(x), "x = %a", (double)x);
  }
}
