// The CPU kernels (llm.c style): one forward/backward pair per layer, shapes in comments.
//
// Determinism. Work is split over rows (or over column blocks for reductions across rows) with
// `omp parallel for schedule(static)`: every output element is computed by one thread, and the
// arithmetic that produces it does not depend on which thread that is. Reductions whose result
// is one number use fixed blocks of BLOCK elements, each summed in double with a fixed lane
// structure (dot8/sum8), and the block partials are added in index order.
//
// Vectorisation. gcc -O2 (gcc 12: "very cheap" cost model) vectorises only loops whose trip
// count it can prove a multiple of the vector width; `#pragma omp simd` (no reduction clause,
// so no reassociation) asks for the loop to be vectorised regardless. Loops that call expf stay
// scalar (glibc's vector expf needs -ffast-math).
#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "error.h"
#include "threads.h"
#include "vexp.h"

enum {
  BLOCK = 4096,     // elements per block of a whole-array reduction
  ROUND = 256,      // blocks reduced per parallel region (partials live on the stack)
  COLS = 64,        // columns per block of a reduction over rows (dbias, dweight)
  PAR_MIN = 32768,  // below this many elements of work a loop runs on one thread
  LANES = 8,        // double accumulators of dot8/sum8
};

static inline int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// sum_i a[i] * b[i] in double, accumulated in LANES interleaved partial sums combined in order:
// the result is defined by C semantics, so it is the same however gcc vectorises it.
static double dot8(const float *restrict a, const float *restrict b, int64_t n) {
  double acc[LANES] = {0};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += (double)a[i + l] * b[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += (double)a[i] * b[i];
  double sum = 0;
  for (int l = 0; l < LANES; l++) sum += acc[l];
  return sum;
}

// sum_i a[i] * b[i] * c[i] in double, as dot8.
static double dot8_3(const float *restrict a, const float *restrict b, const float *restrict c,
                     int64_t n) {
  double acc[LANES] = {0};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += (double)a[i + l] * b[i + l] * c[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += (double)a[i] * b[i] * c[i];
  double sum = 0;
  for (int l = 0; l < LANES; l++) sum += acc[l];
  return sum;
}

// sum_i a[i] in double, as dot8.
static double sum8(const float *restrict a, int64_t n) {
  double acc[LANES] = {0};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int l = 0; l < LANES; l++) acc[l] += a[i + l];
  for (int l = 0; i < n; i++, l++) acc[l] += a[i];
  double sum = 0;
  for (int l = 0; l < LANES; l++) sum += acc[l];
  return sum;
}

// sum (or sum of squares) of a(N): blocks of BLOCK in parallel, partials added in block order.
static double blocked_sum(const float *a, int64_t n, int squares, int nt) {
  double total = 0;
  int64_t nblocks = (n + BLOCK - 1) / BLOCK;
  for (int64_t first = 0; first < nblocks; first += ROUND) {
    double partial[ROUND];
    int count = (int)min64(ROUND, nblocks - first);
#pragma omp parallel for schedule(static) num_threads(nt) if (count > 1)
    for (int b = 0; b < count; b++) {
      int64_t lo = (first + b) * BLOCK, len = min64(BLOCK, n - lo);
      partial[b] = squares ? dot8(a + lo, a + lo, len) : sum8(a + lo, len);
    }
    for (int b = 0; b < count; b++) total += partial[b];
  }
  return total;
}

// dst(C) += sum over rows i of a(N,C)[i] * b(N,C)[i] * scale(N)[i]; b and scale may be NULL
// (factor 1). Parallel over blocks of COLS columns, each column summed in double in row order.
static void column_sums(float *restrict dst, const float *restrict a, const float *restrict b,
                        const float *restrict scale, int n, int c, int nt) {
  int nblocks = (c + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
  for (int blk = 0; blk < nblocks; blk++) {
    int j0 = blk * COLS, width = (int)min64(COLS, c - j0);
    double acc[COLS] = {0};
    for (int i = 0; i < n; i++) {
      const float *ar = a + (size_t)i * c + j0;
      if (b) {
        const float *br = b + (size_t)i * c + j0;
        double s = scale ? scale[i] : 1.0;
#pragma omp simd
        for (int j = 0; j < width; j++) acc[j] += (double)ar[j] * br[j] * s;
      } else {
#pragma omp simd
        for (int j = 0; j < width; j++) acc[j] += ar[j];
      }
    }
    for (int j = 0; j < width; j++) dst[j0 + j] += (float)acc[j];
  }
}

// ---------------------------------------------------------------- matmul, linear

// OpenBLAS's own threads split an sgemm by thread count, and the bits of c change with it
// (measured with 0.3.21: thousands of elements differ between 1 and 2 threads). So c is cut
// into fixed tiles of TILE_M x TILE_N, each computed by a single-threaded sgemm on one OpenMP
// thread: the tiling, and therefore every element's arithmetic, is the same for any thread
// count (threads.c holds OpenBLAS at one thread). Tiles are handed out dynamically: which
// thread computes a tile does not change its bits, and uneven edge tiles (288 = 4 x 64 + 32)
// no longer leave a thread idle.
enum { TILES_WANTED = 8, MAX_TILE_M = 256, MAX_TILE_N = 1024 };

static int round_up_32(int64_t x) {
  return (int)((x + 31) / 32 * 32);
}

// The tiling depends on the shape only: about TILES_WANTED tiles (few tiles mean few re-packings
// of a and b inside sgemm; enough of them keep both cores busy), at most 256 x 1024.
static void choose_tiles(int m, int n, int *tile_m, int *tile_n) {
  *tile_m = round_up_32((m + TILES_WANTED - 1) / TILES_WANTED);
  if (*tile_m > MAX_TILE_M) *tile_m = MAX_TILE_M;
  int tiles_m = (m + *tile_m - 1) / *tile_m;
  int splits_n = (TILES_WANTED + tiles_m - 1) / tiles_m;  // split columns when rows are few
  *tile_n = round_up_32((n + splits_n - 1) / splits_n);
  if (*tile_n > MAX_TILE_N) *tile_n = MAX_TILE_N;
}

void herd_cpu_matmul(float *c, const float *a, const float *b, int m, int n, int k, int transpose_a,
                     int transpose_b, float alpha, float beta) {
  int nt = herd_threads();
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // sgemm would only scale c: do it here rather than rely on k = 0 handling
    for (int64_t i = 0; i < (int64_t)m * n; i++) c[i] = beta == 0 ? 0 : beta * c[i];
    return;
  }
  int lda = transpose_a ? m : k, ldb = transpose_b ? k : n;
  int tile_m, tile_n;
  choose_tiles(m, n, &tile_m, &tile_n);
  int tiles_m = (m + tile_m - 1) / tile_m, tiles_n = (n + tile_n - 1) / tile_n;
#pragma omp parallel for schedule(dynamic) num_threads(nt) if (tiles_m * tiles_n > 1)
  for (int tile = 0; tile < tiles_m * tiles_n; tile++) {
    int i0 = tile / tiles_n * tile_m, j0 = tile % tiles_n * tile_n;
    int tm = (int)min64(tile_m, m - i0), tn = (int)min64(tile_n, n - j0);
    // rows i0.. of op(a): a(M,K) row i0, or a(K,M) column i0; columns j0.. of op(b) likewise
    const float *a_tile = transpose_a ? a + i0 : a + (size_t)i0 * lda;
    const float *b_tile = transpose_b ? b + (size_t)j0 * ldb : b + j0;
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                transpose_b ? CblasTrans : CblasNoTrans, tm, tn, k, alpha, a_tile, lda, b_tile, ldb,
                beta, c + (size_t)i0 * n + j0, n);
  }
}

void herd_cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                             int n, int c, int oc) {
  int nt = herd_threads();
  // out(N,OC) = inp(N,C) @ weight(OC,C)^T
  herd_cpu_matmul(out, inp, weight, n, oc, c, 0, 1, 1.0f, 0.0f);
  if (!bias) return;
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * oc >= PAR_MIN)
  for (int i = 0; i < n; i++) {
    float *o = out + (size_t)i * oc;
#pragma omp simd
    for (int j = 0; j < oc; j++) o[j] += bias[j];
  }
}

void herd_cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, int n, int c, int oc) {
  int nt = herd_threads();
  // dinp(N,C) += dout(N,OC) @ weight(OC,C)
  if (dinp) herd_cpu_matmul(dinp, dout, weight, n, c, oc, 0, 0, 1.0f, 1.0f);
  // dweight(OC,C) += dout(N,OC)^T @ inp(N,C)
  if (dweight) herd_cpu_matmul(dweight, dout, inp, oc, c, n, 1, 0, 1.0f, 1.0f);
  if (dbias) column_sums(dbias, dout, NULL, NULL, n, oc, nt);
}

// ---------------------------------------------------------------- embedding

int herd_cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int n,
                               int vocab, int c) {
  int nt = herd_threads();
  if (n < 0 || vocab < 0 || c < 0)
    return herd_seterr(HERD_EINVAL, "embedding: bad shape n=%d vocab=%d c=%d", n, vocab, c);
  for (int i = 0; i < n; i++)  // all checked before anything is written
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return herd_seterr(HERD_EINVAL, "embedding: token %d at position %d is outside [0, %d)",
                         (int)tokens[i], i, vocab);
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
  for (int i = 0; i < n; i++)
    memcpy(out + (size_t)i * c, table + (size_t)tokens[i] * c, (size_t)c * sizeof *out);
  return HERD_OK;
}

// Tokens repeat, so rows of dtable cannot be split among threads by position: each thread
// takes blocks of COLS columns and walks all positions in order.
void herd_cpu_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int n,
                                 int c) {
  int nt = herd_threads();
  int nblocks = (c + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
  for (int blk = 0; blk < nblocks; blk++) {
    int j0 = blk * COLS, width = (int)min64(COLS, c - j0);
    for (int i = 0; i < n; i++) {
      float *restrict d = dtable + (size_t)tokens[i] * c + j0;
      const float *restrict g = dout + (size_t)i * c + j0;
#pragma omp simd
      for (int j = 0; j < width; j++) d[j] += g[j];
    }
  }
}

// ---------------------------------------------------------------- RMSNorm

void herd_cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int n,
                              int c, float eps) {
  int nt = herd_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
  for (int i = 0; i < n; i++) {
    const float *restrict x = inp + (size_t)i * c;
    float *restrict o = out + (size_t)i * c;
    float r = (float)(1.0 / sqrt(dot8(x, x, c) / c + eps));  // eps inside the sqrt
    rstd[i] = r;
#pragma omp simd
    for (int j = 0; j < c; j++) o[j] = x[j] * r * weight[j];
  }
}

// With r = rstd and o_j = x_j r w_j, dr/dx_j = -r^3 x_j / C:
//   dx_j = r w_j dout_j - (r^3 / C) x_j sum_k dout_k w_k x_k;   dw_j = sum_rows dout_j x_j r
void herd_cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                               const float *weight, const float *rstd, int n, int c) {
  int nt = herd_threads();
  if (dinp) {
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
    for (int i = 0; i < n; i++) {
      const float *restrict x = inp + (size_t)i * c;
      const float *restrict g = dout + (size_t)i * c;
      float *restrict dx = dinp + (size_t)i * c;
      double r = rstd[i];
      float rf = rstd[i], coef = (float)(r * r * r * dot8_3(g, weight, x, c) / c);
#pragma omp simd
      for (int j = 0; j < c; j++) dx[j] += rf * weight[j] * g[j] - coef * x[j];
    }
  }
  if (dweight) column_sums(dweight, dout, inp, rstd, n, c, nt);
}

// ---------------------------------------------------------------- SwiGLU

static inline float sigmoidf(float x) {
  return 1.0f / (1.0f + expf(-x));
}

void herd_cpu_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
  int nt = herd_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

// d silu(g)/dg = s + g s (1 - s), s = sigmoid(g).
void herd_cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                              const float *up, int64_t n) {
  int nt = herd_threads();
  if (!dgate && !dup) return;
#pragma omp parallel for schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    float g = gate[i], s = sigmoidf(g);
    if (dgate) dgate[i] += dout[i] * up[i] * (s + g * s * (1.0f - s));
    if (dup) dup[i] += dout[i] * g * s;
  }
}

// ---------------------------------------------------------------- softmax, weighted NLL

static float row_max(const float *x, int c) {
  float m = x[0];
  for (int j = 1; j < c; j++) m = x[j] > m ? x[j] : m;
  return m;
}

// out may equal inp.
void herd_cpu_softmax_forward(float *out, const float *inp, int n, int c) {
  int nt = herd_threads();
  if (c <= 0) return;
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
  for (int i = 0; i < n; i++) {
    const float *x = inp + (size_t)i * c;
    float *o = out + (size_t)i * c;
    float m = row_max(x, c);
    herd_exp_shifted(o, x, m, c);
    double sum = sum8(o, c);
    float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int j = 0; j < c; j++) o[j] *= inv;
  }
}

// dinp_j += out_j (dout_j - sum_k dout_k out_k)
void herd_cpu_softmax_backward(float *dinp, const float *dout, const float *out, int n, int c) {
  int nt = herd_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * c >= PAR_MIN)
  for (int i = 0; i < n; i++) {
    const float *restrict g = dout + (size_t)i * c, *restrict p = out + (size_t)i * c;
    float *restrict d = dinp + (size_t)i * c;
    float dot = (float)dot8(g, p, c);
#pragma omp simd
    for (int j = 0; j < c; j++) d[j] += p[j] * (g[j] - dot);
  }
}

// -log softmax(x)[t] = lse(x) - x[t], lse = m + log sum exp(x - m), m = max x (stable for any
// logits). With dlogits, exp(x - m) is stored in the row first (x[t] and m are read before, so
// dlogits may be logits), then scaled to g (p - onehot(t)), g = dloss * weight.
int herd_cpu_weighted_nll(float *losses, float *dlogits, const float *logits,
                          const int32_t *targets, const float *weights, float dloss, int n, int v) {
  int nt = herd_threads();
  if (n < 0 || v < 1) return herd_seterr(HERD_EINVAL, "weighted_nll: bad shape n=%d v=%d", n, v);
  for (int i = 0; i < n; i++)  // all checked before anything is written (dlogits may be logits)
    if (targets[i] < -1 || targets[i] >= v)
      return herd_seterr(HERD_EINVAL, "weighted_nll: target %d of row %d is outside [-1, %d)",
                         (int)targets[i], i, v);
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)n * v >= PAR_MIN)
  for (int i = 0; i < n; i++) {
    const float *x = logits + (size_t)i * v;
    float *d = dlogits ? dlogits + (size_t)i * v : NULL;
    int t = targets[i];
    if (t < 0) {  // ignored position
      losses[i] = 0;
      if (d) memset(d, 0, (size_t)v * sizeof *d);
      continue;
    }
    float m = row_max(x, v), xt = x[t];
    double sum = 0;
    if (d) {
      herd_exp_shifted(d, x, m, v);
      sum = sum8(d, v);
    } else {  // forward only: exp in stack chunks, summed in the same fixed order
      float chunk[1024];
      for (int j = 0; j < v; j += 1024) {
        int len = v - j < 1024 ? v - j : 1024;
        herd_exp_shifted(chunk, x + j, m, len);
        sum += sum8(chunk, len);
      }
    }
    losses[i] = (float)(weights[i] * (m + log(sum) - xt));
    if (d) {
      float g = dloss * weights[i], scale = (float)(g / sum);
#pragma omp simd
      for (int j = 0; j < v; j++) d[j] *= scale;
      d[t] -= g;
    }
  }
  return HERD_OK;
}

// ---------------------------------------------------------------- scalar head

int herd_cpu_scalar_head_forward(float *out, const float *hidden, const float *weight, float bias,
                                 const int32_t *positions, int p, int n, int c) {
  int nt = herd_threads();
  if (p < 0 || n < 0 || c < 0)
    return herd_seterr(HERD_EINVAL, "scalar_head: bad shape p=%d n=%d c=%d", p, n, c);
  for (int k = 0; k < p; k++)
    if (positions[k] < 0 || positions[k] >= n)
      return herd_seterr(HERD_EINVAL, "scalar_head: positions[%d] = %d is outside [0, %d)", k,
                         (int)positions[k], n);
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)p * c >= PAR_MIN)
  for (int k = 0; k < p; k++)
    out[k] = (float)(dot8(hidden + (size_t)positions[k] * c, weight, c) + bias);
  return HERD_OK;
}

// Positions may repeat, so the work is split over blocks of COLS columns, positions in order.
void herd_cpu_scalar_head_backward(float *dhidden, float *dweight, float *dbias, const float *dout,
                                   const float *hidden, const float *weight,
                                   const int32_t *positions, int p, int c) {
  int nt = herd_threads();
  if (dhidden || dweight) {
    int nblocks = (c + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) num_threads(nt) if ((int64_t)p * c >= PAR_MIN)
    for (int blk = 0; blk < nblocks; blk++) {
      int j0 = blk * COLS, width = (int)min64(COLS, c - j0);
      double acc[COLS] = {0};
      for (int k = 0; k < p; k++) {
        size_t row = (size_t)positions[k] * c + j0;
        float g = dout[k];
        if (dhidden) {
          float *restrict dh = dhidden + row;
          const float *restrict w = weight + j0;
#pragma omp simd
          for (int j = 0; j < width; j++) dh[j] += g * w[j];
        }
        if (dweight) {
          const float *restrict h = hidden + row;
#pragma omp simd
          for (int j = 0; j < width; j++) acc[j] += (double)g * h[j];
        }
      }
      if (dweight)
        for (int j = 0; j < width; j++) dweight[j0 + j] += (float)acc[j];
    }
  }
  if (dbias) *dbias += (float)sum8(dout, p);
}

// ---------------------------------------------------------------- element-wise
// `omp simd` holds for out == a (same index read, then written), so these work in place.

void herd_cpu_add(float *out, const float *a, const float *b, int64_t n) {
  int nt = herd_threads();
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void herd_cpu_add_backward(float *da, float *db, const float *dout, int64_t n) {
  int nt = herd_threads();
  if (da) {
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) da[i] += dout[i];
  }
  if (db) {
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) db[i] += dout[i];
  }
}

void herd_cpu_mul(float *out, const float *a, const float *b, int64_t n) {
  int nt = herd_threads();
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void herd_cpu_mul_backward(float *da, float *db, const float *dout, const float *a, const float *b,
                           int64_t n) {
  int nt = herd_threads();
  if (da) {
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) da[i] += dout[i] * b[i];
  }
  if (db) {
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) db[i] += dout[i] * a[i];
  }
}

void herd_cpu_scale(float *out, const float *a, float s, int64_t n) {
  int nt = herd_threads();
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = a[i] * s;
}

void herd_cpu_scale_backward(float *da, const float *dout, float s, int64_t n) {
  int nt = herd_threads();
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) da[i] += dout[i] * s;
}

// ---------------------------------------------------------------- reductions

double herd_cpu_sum(const float *a, int64_t n) {
  return blocked_sum(a, n, 0, herd_threads());
}

double herd_cpu_mean(const float *a, int64_t n) {
  return herd_cpu_sum(a, n) / (double)n;
}

// The first NaN, else the first largest element, of a(N) (n >= 1).
static float max_serial(const float *a, int64_t n, int64_t *argmax) {
  float best = a[0];
  int64_t at = 0;
  for (int64_t i = 0; i < n && !isnan(best); i++)
    if (isnan(a[i]) || a[i] > best) best = a[i], at = i;
  *argmax = at;
  return best;
}

float herd_cpu_max(const float *a, int64_t n, int64_t *argmax) {
  int nt = herd_threads();
  int64_t nblocks = (n + BLOCK - 1) / BLOCK, at = 0;
  float best = a[0];
  for (int64_t first = 0; first < nblocks && !isnan(best); first += ROUND) {
    float value[ROUND];
    int64_t index[ROUND];
    int count = (int)min64(ROUND, nblocks - first);
#pragma omp parallel for schedule(static) num_threads(nt) if (count > 1)
    for (int b = 0; b < count; b++) {
      int64_t lo = (first + b) * BLOCK;
      value[b] = max_serial(a + lo, min64(BLOCK, n - lo), &index[b]);
      index[b] += lo;
    }
    for (int b = 0; b < count && !isnan(best); b++)  // in block order: ties keep the first
      if (isnan(value[b]) || value[b] > best) best = value[b], at = index[b];
  }
  if (argmax) *argmax = at;
  return best;
}

void herd_cpu_sum_backward(float *da, float dout, int64_t n) {
  int nt = herd_threads();
#pragma omp parallel for simd schedule(static) num_threads(nt) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) da[i] += dout;
}

void herd_cpu_mean_backward(float *da, float dout, int64_t n) {
  herd_cpu_sum_backward(da, (float)((double)dout / (double)n), n);
}

void herd_cpu_max_backward(float *da, float dout, int64_t argmax) {
  da[argmax] += dout;
}

double herd_cpu_global_norm(const float *const *arrays, const int64_t *lengths, int count) {
  int nt = herd_threads();
  double total = 0;
  for (int k = 0; k < count; k++) total += blocked_sum(arrays[k], lengths[k], 1, nt);
  return sqrt(total);
}
