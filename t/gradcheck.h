// defines: gc_loss_fn, gc_numeric_grad, gc_rel_error, gc_fill_uniform, gc_to_double,
//          gc_to_float, gc_dot_weights
//
// Finite-difference checks for the kernels' backward passes. The reference is a naive
// double-precision forward written in the test; its central differences are compared with the
// f32 analytic gradient by norm-wise relative error.
#ifndef HERD_T_GRADCHECK_H
#define HERD_T_GRADCHECK_H

#include <stdint.h>

// The scalar loss of a double-precision reference forward, reading its inputs from ctx.
typedef double (*gc_loss_fn)(void *ctx);

// grad[i] = (loss(x + h e_i) - loss(x - h e_i)) / 2h for i < n; x is restored.
void gc_numeric_grad(double *grad, double *x, int64_t n, gc_loss_fn loss, void *ctx, double h);
// ||analytic - numeric|| / max(||analytic||, ||numeric||, 1e-30).
double gc_rel_error(const float *analytic, const double *numeric, int64_t n);
// Deterministic uniform values in [lo, hi) from `seed` (xorshift; independent of herd's RNG).
void gc_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);
void gc_to_double(double *out, const float *x, int64_t n);
void gc_to_float(float *out, const double *x, int64_t n);
// sum_i out[i] * weights[i]: the scalar loss used to test a kernel with a random upstream
// gradient (then dout = weights).
double gc_dot_weights(const double *out, const float *weights, int64_t n);

#endif
