// defines: herd_exp_shifted
//
// A vectorisable exp for the kernels (softmax, the fused NLL, attention): libm's expf is a
// call per element and keeps loops scalar. Internal to libherd (not installed).
#ifndef HERD_VEXP_H
#define HERD_VEXP_H

#include <stdint.h>

// y(n) = exp(x(n) - shift) for x - shift <= 0, vectorised: x - shift is clamped to [-87.3, 0]
// (exp(-87.3) ~ FLT_MIN; a rounding excess over 0 gives at most 1), then split into
// n ln2 + r, |r| <= ln2/2, and exp(r) comes from Cephes' expf polynomial (error <= 1.4 ulp).
// NaN stays NaN. The same arithmetic on every x86-64, unlike libm's expf variants. y may be x
// (in place: the fused NLL turns logits into their gradients); `omp simd` vectorises the loops
// without the no-alias promise of restrict.
static inline void herd_exp_shifted(float *y, const float *x, float shift, int n) {
#pragma omp simd
  for (int i = 0; i < n; i++) {  // the clamp on its own: fused, gcc would not vectorise it
    float z = x[i] - shift;
    z = z < -87.3f ? -87.3f : z;
    y[i] = z > 0 ? 0 : z;
  }
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
#pragma omp simd
  for (int i = 0; i < n; i++) {
    union {
      float f;
      uint32_t u;
    } t = {y[i] * 1.44269504f + magic}, base = {magic}, scale;
    const float k = t.f - magic;                                      // round(z / ln 2)
    const float r = (y[i] - k * 0.693359375f) - k * -2.12194440e-4f;  // z - k ln2, ln2 in 2 parts
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    scale.u = (t.u - base.u + 127u) << 23;  // 2^k from k's bits in t's mantissa
    y[i] = p * scale.f;
  }
}

#endif
