#include "gradcheck.h"

#include <math.h>

void gc_numeric_grad(double *grad, double *x, int64_t n, gc_loss_fn loss, void *ctx, double h) {
  for (int64_t i = 0; i < n; i++) {
    double saved = x[i];
    x[i] = saved + h;
    double plus = loss(ctx);
    x[i] = saved - h;
    double minus = loss(ctx);
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
}

double gc_rel_error(const float *analytic, const double *numeric, int64_t n) {
  double diff = 0, norm_a = 0, norm_n = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = (double)analytic[i] - numeric[i];
    diff += d * d;
    norm_a += (double)analytic[i] * analytic[i];
    norm_n += numeric[i] * numeric[i];
  }
  double scale = fmax(fmax(sqrt(norm_a), sqrt(norm_n)), 1e-30);
  return sqrt(diff) / scale;
}

void gc_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < n; i++) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    double unit = (double)(state >> 11) / 9007199254740992.0;  // 53 random bits in [0, 1)
    x[i] = (float)(lo + (hi - lo) * unit);
  }
}

void gc_to_double(double *out, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = x[i];
}

void gc_to_float(float *out, const double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = (float)x[i];
}

double gc_dot_weights(const double *out, const float *weights, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += out[i] * weights[i];
  return sum;
}
