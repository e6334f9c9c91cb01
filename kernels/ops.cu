// The CUDA kernels of cuda_ops.h: the same arithmetic as runtime/ops.c and the rotary embedding
// of runtime/attention.c, on the device.
//
// Determinism. Every output element is written by one thread. Sums over a row are taken by one
// block: each thread adds a fixed, strided set of elements, then a fixed tree (warp shuffles,
// then the warps in order) adds the partial sums. Sums over rows (dbias, dweight) use blocks of
// 32 columns x 16 row slices, combined in slice order. Scatters where several rows land on the
// same output row (embedding and scalar-head backward) sort the (target row, source) pairs with
// CUB's radix sort (stable, deterministic) and let one block add a target row's sources in
// source order, which is also the CPU's order. No float atomics anywhere: the bits depend on
// the shapes only.
//
// Precision. Reductions accumulate in double like the CPU kernels, so the remaining differences
// from the CPU are summation order (in double), expf/sincosf versus the CPU's own (both within
// 2 ulp) and nvcc's fused multiply-adds. Where an accumulation must round exactly as on the CPU
// (the scatters), __fmul_rn/__fadd_rn keep the compiler from fusing.
//
// cuBLASLt is column-major and herd is row-major; see lt_matmul for the mapping.
#include <cub/device/device_radix_sort.cuh>
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>

#include "bf16.cuh"
#include "cuda.h"
#include "cuda_internal.h"
#include "cuda_ops.h"

namespace {

constexpr int THREADS = 256;         // threads per block (a multiple of 32)
constexpr int MAX_BLOCKS = 1 << 18;  // grid-stride loops: enough blocks to fill any GPU
constexpr int COLUMN_TILE = 32;      // columns per block of a sum over rows
constexpr int ROW_SLICES = 16;       // threads per column of a sum over rows
constexpr int NORM_MAX_BLOCKS = 1024;

int grid_for(int64_t n) {
  int64_t blocks = (n + THREADS - 1) / THREADS;
  return (int)(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

// ---------------------------------------------------------------- block reductions

template <typename T>
struct Sum {
  __device__ T operator()(T a, T b) const { return a + b; }
};

// The CPU's row_max comparison (a NaN is only kept where it comes first).
struct Max {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// Combines `value` over the block (blockDim.x a multiple of 32, at most THREADS); every thread
// gets the result. Every thread of the block must call it.
template <typename T, typename Op>
__device__ T block_reduce(T value, Op op) {
  __shared__ T partial[THREADS / 32];
  for (int offset = 16; offset > 0; offset >>= 1)
    value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // the threads of a previous call have read `partial`
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  T total = partial[0];
  for (int w = 1; w < (int)blockDim.x / 32; w++) total = op(total, partial[w]);
  return total;
}

// dst(cols) += sum over r < rows of term(r, j), in double: a block takes COLUMN_TILE columns,
// its ROW_SLICES threads per column take every ROW_SLICES-th row, the slices add up in order.
template <typename Term>
__global__ void column_sums_kernel(float *dst, int rows, int cols, Term term) {
  __shared__ double partial[ROW_SLICES][COLUMN_TILE];
  int col = blockIdx.x * COLUMN_TILE + threadIdx.x;
  double acc = 0;
  if (col < cols)
    for (int r = threadIdx.y; r < rows; r += ROW_SLICES) acc += term(r, col);
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    double total = 0;
    for (int s = 0; s < ROW_SLICES; s++) total += partial[s][threadIdx.x];
    dst[col] += (float)total;
  }
}

template <typename Term>
int column_sums(float *dst, int rows, int cols, Term term, const char *what) {
  if (rows <= 0 || cols <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  dim3 block(COLUMN_TILE, ROW_SLICES);
  column_sums_kernel<<<(cols + COLUMN_TILE - 1) / COLUMN_TILE, block, 0, stream>>>(dst, rows, cols,
                                                                                   term);
  return herd_cuda_launched(what);
}

// ---------------------------------------------------------------- index checks

__global__ void find_first_out_of_range_kernel(const int32_t *values, int n, int lo, int hi,
                                               int *first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    if (values[i] < lo || values[i] >= hi) atomicMin(first, (int)i);  // integers: exact
}

// *index = the first i with values[i] outside [lo, hi) and *value = values[i], or *index = -1.
// Waits for the answer: the ops that check must fail before they write anything.
int first_out_of_range(const int32_t *values, int n, int lo, int hi, int *index, int *value) {
  *index = -1;
  if (n <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  DeviceBuffer<int> first;
  HERD_TRY(first.allocate(1));
  static const int none = INT_MAX;
  HERD_CUDA_CHECK(cudaMemcpyAsync(first.ptr, &none, sizeof none, cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(host to device, %zu bytes)", sizeof none);
  find_first_out_of_range_kernel<<<grid_for(n), THREADS, 0, stream>>>(values, n, lo, hi, first.ptr);
  HERD_TRY(herd_cuda_launched("find_first_out_of_range"));
  int found = INT_MAX;
  HERD_CUDA_CHECK(cudaMemcpyAsync(&found, first.ptr, sizeof found, cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync(device to host, %zu bytes)", sizeof found);
  HERD_CUDA_CHECK(cudaStreamSynchronize(stream), "cudaStreamSynchronize (index check)");
  if (found == INT_MAX) return HERD_OK;
  int bad = 0;
  HERD_CUDA_CHECK(cudaMemcpyAsync(&bad, values + found, sizeof bad, cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync(device to host, %zu bytes)", sizeof bad);
  HERD_CUDA_CHECK(cudaStreamSynchronize(stream), "cudaStreamSynchronize (index check)");
  *index = found;
  *value = bad;
  return HERD_OK;
}

// ---------------------------------------------------------------- sorted scatters

__global__ void iota_kernel(int32_t *out, int n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = (int32_t)i;
}

// sorted_keys(n) = keys in ascending order, sorted_indices(n) = where each came from; equal
// keys keep their index order (the radix sort is stable).
int sort_indices_by_key(const int32_t *keys, int n, DeviceBuffer<int32_t> &sorted_keys,
                        DeviceBuffer<int32_t> &sorted_indices) {
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  DeviceBuffer<int32_t> indices;
  HERD_TRY(indices.allocate(n));
  HERD_TRY(sorted_keys.allocate(n));
  HERD_TRY(sorted_indices.allocate(n));
  iota_kernel<<<grid_for(n), THREADS, 0, stream>>>(indices.ptr, n);
  HERD_TRY(herd_cuda_launched("iota"));
  size_t temp_bytes = 0;
  HERD_CUDA_CHECK(
      cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, sorted_keys.ptr, indices.ptr,
                                      sorted_indices.ptr, n, 0, 32, stream),
      "cub::DeviceRadixSort::SortPairs(%d keys, size query)", n);
  DeviceBuffer<unsigned char> temp;
  HERD_TRY(temp.allocate(temp_bytes));
  HERD_CUDA_CHECK(
      cub::DeviceRadixSort::SortPairs(temp.ptr, temp_bytes, keys, sorted_keys.ptr, indices.ptr,
                                      sorted_indices.ptr, n, 0, 32, stream),
      "cub::DeviceRadixSort::SortPairs(%d keys)", n);
  return herd_cuda_launched("cub::DeviceRadixSort::SortPairs");
}

// dst(R,C)[row] += term(source, j) for every (row, source) pair, sources in ascending order.
// Block k handles the run of equal rows starting at sorted position k (other blocks exit).
template <typename Term>
__global__ void accumulate_sorted_rows_kernel(float *dst, const int32_t *sorted_rows,
                                              const int32_t *sorted_sources, int n, int c,
                                              Term term) {
  int k = blockIdx.x;
  int row = sorted_rows[k];
  if (k > 0 && sorted_rows[k - 1] == row) return;  // not the first pair of its run
  float *d = dst + (int64_t)row * c;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    float acc = d[j];
    for (int e = k; e < n && sorted_rows[e] == row; e++)
      acc = __fadd_rn(acc, term(sorted_sources[e], j));
    d[j] = acc;
  }
}

template <typename Term>
int scatter_rows(float *dst, const int32_t *rows, int n, int c, Term term, const char *what) {
  if (n <= 0 || c <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  DeviceBuffer<int32_t> sorted_rows, sorted_sources;
  HERD_TRY(sort_indices_by_key(rows, n, sorted_rows, sorted_sources));
  accumulate_sorted_rows_kernel<<<n, THREADS, 0, stream>>>(dst, sorted_rows.ptr, sorted_sources.ptr,
                                                           n, c, term);
  return herd_cuda_launched(what);
}

// ---------------------------------------------------------------- element-wise kernels

#define GRID_STRIDE(i, n)                                                   \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)gridDim.x * blockDim.x)

__global__ void add_kernel(float *out, const float *a, const float *b, int64_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void add_backward_kernel(float *da, float *db, const float *dout, int64_t n) {
  GRID_STRIDE(i, n) {
    if (da) da[i] += dout[i];
    if (db) db[i] += dout[i];
  }
}

__global__ void mul_kernel(float *out, const float *a, const float *b, int64_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

__global__ void mul_backward_kernel(float *da, float *db, const float *dout, const float *a,
                                    const float *b, int64_t n) {
  GRID_STRIDE(i, n) {
    if (da) da[i] += dout[i] * b[i];
    if (db) db[i] += dout[i] * a[i];
  }
}

__global__ void scale_kernel(float *out, const float *a, float s, int64_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] * s;
}

__global__ void scale_backward_kernel(float *da, const float *dout, float s, int64_t n) {
  GRID_STRIDE(i, n) da[i] += dout[i] * s;
}

__device__ float sigmoid(float x) {
  return 1.0f / (1.0f + expf(-x));
}

__global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up, int64_t n) {
  GRID_STRIDE(i, n) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// d silu(g)/dg = s + g s (1 - s), s = sigmoid(g).
__global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout,
                                       const float *gate, const float *up, int64_t n) {
  GRID_STRIDE(i, n) {
    float g = gate[i], s = sigmoid(g);
    if (dgate) dgate[i] += dout[i] * up[i] * (s + g * s * (1.0f - s));
    if (dup) dup[i] += dout[i] * g * s;
  }
}

// c = beta * c, or 0 when beta is 0 (NaN in c included): matmul with k = 0.
__global__ void scale_matrix_kernel(float *c, int64_t n, float beta) {
  GRID_STRIDE(i, n) c[i] = beta == 0 ? 0.0f : beta * c[i];
}

// out(N,OC) += bias(OC) on every row.
__global__ void add_bias_kernel(float *out, const float *bias, int64_t n, int oc) {
  GRID_STRIDE(i, n) out[i] += bias[i % oc];
}

__global__ void f32_to_bf16_kernel(uint16_t *out, const float *in, int64_t n) {
  GRID_STRIDE(i, n) out[i] = herd_device_bf16_from_f32(in[i]);
}

__global__ void bf16_to_f32_kernel(float *out, const uint16_t *in, int64_t n) {
  GRID_STRIDE(i, n) out[i] = herd_device_f32_from_bf16(in[i]);
}

__global__ void scale_bf16_matrix_kernel(uint16_t *c, int64_t n, float beta) {
  GRID_STRIDE(i, n) {
    float scaled = beta * herd_device_f32_from_bf16(c[i]);
    c[i] = beta == 0 ? (uint16_t)0 : herd_device_bf16_from_f32(scaled);
  }
}

// Launches an element-wise kernel over n elements (nothing for n <= 0).
template <typename Kernel, typename... Args>
int launch_elementwise(const char *what, Kernel kernel, int64_t n, Args... args) {
  if (n <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  kernel<<<grid_for(n), THREADS, 0, stream>>>(args...);
  return herd_cuda_launched(what);
}

// ---------------------------------------------------------------- row kernels (one block per row)

// exp(x - shift) with x - shift clamped to [-87.3, 0], as herd_exp_shifted (vexp.h).
__device__ float exp_shifted(float x, float shift) {
  float z = x - shift;
  z = z < -87.3f ? -87.3f : z;
  z = z > 0 ? 0.0f : z;
  return expf(z);
}

__device__ float row_max(const float *x, int c) {
  float local = -INFINITY;
  for (int j = threadIdx.x; j < c; j += blockDim.x) local = Max()(local, x[j]);
  return block_reduce(local, Max());
}

__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp,
                                       const float *weight, int c, float eps) {
  int64_t row = blockIdx.x;
  const float *x = inp + row * c;
  float *o = out + row * c;
  double squares = 0;
  for (int j = threadIdx.x; j < c; j += blockDim.x) squares += (double)x[j] * x[j];
  squares = block_reduce(squares, Sum<double>());
  float r = (float)(1.0 / sqrt(squares / c + eps));  // eps inside the sqrt
  if (threadIdx.x == 0) rstd[row] = r;
  for (int j = threadIdx.x; j < c; j += blockDim.x) o[j] = x[j] * r * weight[j];
}

// dx_j += r w_j dout_j - (r^3 / C) x_j sum_k dout_k w_k x_k
__global__ void rmsnorm_backward_kernel(float *dinp, const float *dout, const float *inp,
                                        const float *weight, const float *rstd, int c) {
  int64_t row = blockIdx.x;
  const float *x = inp + row * c, *g = dout + row * c;
  float *dx = dinp + row * c;
  double dot = 0;
  for (int j = threadIdx.x; j < c; j += blockDim.x) dot += (double)g[j] * weight[j] * x[j];
  dot = block_reduce(dot, Sum<double>());
  double r = rstd[row];
  float rf = rstd[row], coef = (float)(r * r * r * dot / c);
  for (int j = threadIdx.x; j < c; j += blockDim.x) dx[j] += rf * weight[j] * g[j] - coef * x[j];
}

// out may equal inp: a thread reads and writes the same elements, after the max is known.
__global__ void softmax_forward_kernel(float *out, const float *inp, int c) {
  int64_t row = blockIdx.x;
  const float *x = inp + row * c;
  float *o = out + row * c;
  float m = row_max(x, c);
  double sum = 0;
  for (int j = threadIdx.x; j < c; j += blockDim.x) {
    float e = exp_shifted(x[j], m);
    o[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, Sum<double>());
  float inv = (float)(1.0 / sum);
  for (int j = threadIdx.x; j < c; j += blockDim.x) o[j] *= inv;
}

// dinp_j += out_j (dout_j - sum_k dout_k out_k)
__global__ void softmax_backward_kernel(float *dinp, const float *dout, const float *out, int c) {
  int64_t row = blockIdx.x;
  const float *g = dout + row * c, *p = out + row * c;
  float *d = dinp + row * c;
  double dot = 0;
  for (int j = threadIdx.x; j < c; j += blockDim.x) dot += (double)g[j] * p[j];
  float dotf = (float)block_reduce(dot, Sum<double>());
  for (int j = threadIdx.x; j < c; j += blockDim.x) d[j] += p[j] * (g[j] - dotf);
}

// -log softmax(x)[t] = m + log sum exp(x - m) - x[t]. With dlogits, exp(x - m) goes into the row
// first, then is scaled to g (p - onehot(t)), g = dloss * weight. In place (dlogits == logits),
// x[t] is read before the first barrier and nothing is written before the max is known.
__global__ void weighted_nll_kernel(float *losses, float *dlogits, const float *logits,
                                    const int32_t *targets, const float *weights, float dloss,
                                    int v) {
  int64_t row = blockIdx.x;
  const float *x = logits + row * v;
  float *d = dlogits ? dlogits + row * v : nullptr;
  int t = targets[row];
  if (t < 0) {  // ignored position (the whole block leaves together)
    if (threadIdx.x == 0) losses[row] = 0;
    if (d)
      for (int j = threadIdx.x; j < v; j += blockDim.x) d[j] = 0;
    return;
  }
  float xt = x[t];
  float m = row_max(x, v);
  double sum = 0;
  for (int j = threadIdx.x; j < v; j += blockDim.x) {
    float e = exp_shifted(x[j], m);
    if (d) d[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, Sum<double>());
  if (threadIdx.x == 0) losses[row] = (float)((double)weights[row] * ((double)m + log(sum) - xt));
  if (!d) return;
  float g = dloss * weights[row], scale = (float)(g / sum);
  for (int j = threadIdx.x; j < v; j += blockDim.x) {
    float value = __fmul_rn(d[j], scale);  // rounded before subtracting g, as on the CPU
    if (j == t) value -= g;
    d[j] = value;
  }
}

__global__ void scalar_head_forward_kernel(float *out, const float *hidden, const float *weight,
                                           float bias, const int32_t *positions, int c) {
  int k = blockIdx.x;
  const float *h = hidden + (int64_t)positions[k] * c;
  double dot = 0;
  for (int j = threadIdx.x; j < c; j += blockDim.x) dot += (double)h[j] * weight[j];
  dot = block_reduce(dot, Sum<double>());
  if (threadIdx.x == 0) out[k] = (float)(dot + bias);
}

// *total += (float)(sum of a(n) in double): one block.
__global__ void add_sum_kernel(float *total, const float *a, int n) {
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += a[i];
  acc = block_reduce(acc, Sum<double>());
  if (threadIdx.x == 0) *total += (float)acc;
}

// out(N,C)[i] = table[tokens[i]] (tokens already checked).
__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const float *table,
                                         int c) {
  int64_t row = blockIdx.x;
  const float *src = table + (int64_t)tokens[row] * c;
  float *dst = out + row * c;
  for (int j = threadIdx.x; j < c; j += blockDim.x) dst[j] = src[j];
}

// Launches a one-block-per-row kernel over n rows (nothing for n <= 0).
template <typename Kernel, typename... Args>
int launch_rows(const char *what, Kernel kernel, int n, Args... args) {
  if (n <= 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  kernel<<<n, THREADS, 0, stream>>>(args...);
  return herd_cuda_launched(what);
}

// ---------------------------------------------------------------- terms of sums over rows

struct BiasGradTerm {  // dbias(OC) += sum_i dout[i]
  const float *dout;
  int cols;
  __device__ double operator()(int r, int j) const { return dout[(int64_t)r * cols + j]; }
};

struct RmsnormWeightGradTerm {  // dweight(C) += sum_i dout[i] * inp[i] * rstd[i]
  const float *dout, *inp, *rstd;
  int cols;
  __device__ double operator()(int r, int j) const {
    int64_t at = (int64_t)r * cols + j;
    return (double)dout[at] * inp[at] * (double)rstd[r];
  }
};

struct ScalarHeadWeightGradTerm {  // dweight(C) += sum_k dout[k] * hidden[positions[k]]
  const float *dout, *hidden;
  const int32_t *positions;
  int cols;
  __device__ double operator()(int k, int j) const {
    return (double)dout[k] * hidden[(int64_t)positions[k] * cols + j];
  }
};

struct EmbeddingRowTerm {  // dtable[tokens[i]] += dout[i]
  const float *dout;
  int cols;
  __device__ float operator()(int source, int j) const { return dout[(int64_t)source * cols + j]; }
};

struct ScalarHeadRowTerm {  // dhidden[positions[k]] += dout[k] * weight
  const float *dout, *weight;
  __device__ float operator()(int source, int j) const {
    return __fmul_rn(dout[source], weight[j]);
  }
};

// ---------------------------------------------------------------- cuBLASLt

// The largest power of two (at most 256) dividing the address: cuBLASLt's heuristic assumes
// 256-byte aligned matrices unless told otherwise, and views into a buffer are not.
uint32_t alignment_of(const void *pointer) {
  uintptr_t address = (uintptr_t)pointer;
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment) alignment >>= 1;
  return alignment;
}

struct LtDescriptors {
  cublasLtMatmulDesc_t operation = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors &) = delete;
  LtDescriptors &operator=(const LtDescriptors &) = delete;
  ~LtDescriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (operation) cublasLtMatmulDescDestroy(operation);
  }
};

// A column-major rows x cols matrix with leading dimension ld.
int lt_layout(cublasLtMatrixLayout_t *layout, cudaDataType_t type, int rows, int cols, int ld) {
  HERD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(layout, type, (uint64_t)rows, (uint64_t)cols, ld),
                    "cublasLtMatrixLayoutCreate(%d x %d, ld %d)", rows, cols, ld);
  return HERD_OK;
}

template <typename T>
int lt_preference(cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t name,
                  T value) {
  HERD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, name, &value, sizeof value),
                    "cublasLtMatmulPreferenceSetAttribute(%d)", (int)name);
  return HERD_OK;
}

// c(M,N) = alpha op(a) op(b) + beta c, row-major as herd_cpu_matmul, m, n, k >= 1.
//
// cuBLASLt reads matrices column-major. A row-major (r, s) array with leading dimension s is,
// read column-major, the (s, r) matrix with the same leading dimension: its transpose. So herd's
// c(M,N) is cuBLASLt's c^T (N,M) with ld N, and c = op(a) op(b) becomes
//   c^T = op(b)^T op(a)^T,
// a cuBLASLt matmul with m' = N, n' = M, k' = K whose first operand ("A") is herd's b and whose
// second ("B") is herd's a:
//   A = b: b stored (K,N) reads as b^T (N,K), ld N, which is op(b)^T: no transpose;
//          b stored (N,K) (transpose_b) reads as (K,N), ld K, whose transpose is op(b)^T: OP_T.
//   B = a: a stored (M,K) reads as a^T (K,M), ld K, which is op(a)^T: no transpose;
//          a stored (K,M) (transpose_a) reads as (M,K), ld M, whose transpose is op(a)^T: OP_T.
// The transposes therefore keep their meaning but swap sides: cuBLASLt's TRANSA is herd's
// transpose_b and TRANSB is transpose_a.
int lt_matmul(void *c, cudaDataType_t c_type, const void *a, const void *b, cudaDataType_t ab_type,
              int m, int n, int k, int transpose_a, int transpose_b, float alpha, float beta) {
  char shape[160];
  snprintf(shape, sizeof shape,
           "m=%d n=%d k=%d transpose_a=%d transpose_b=%d, %s inputs, %s output", m, n, k,
           transpose_a, transpose_b, ab_type == CUDA_R_16BF ? "bf16" : "f32",
           c_type == CUDA_R_16BF ? "bf16" : "f32");
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  cublasLtHandle_t handle;
  void *workspace;
  size_t workspace_bytes;
  HERD_TRY(herd_cublaslt(&handle, &workspace, &workspace_bytes));

  LtDescriptors d;
  // CUBLAS_COMPUTE_32F: f32 products and sums (the _FAST_TF32 variant would round inputs to TF32).
  HERD_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.operation, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                    "cublasLtMatmulDescCreate(%s)", shape);
  cublasOperation_t op_a = transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t op_b = transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  HERD_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.operation, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a),
      "cublasLtMatmulDescSetAttribute(TRANSA, %s)", shape);
  HERD_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.operation, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b),
      "cublasLtMatmulDescSetAttribute(TRANSB, %s)", shape);
  HERD_TRY(transpose_b ? lt_layout(&d.a, ab_type, k, n, k) : lt_layout(&d.a, ab_type, n, k, n));
  HERD_TRY(transpose_a ? lt_layout(&d.b, ab_type, m, k, m) : lt_layout(&d.b, ab_type, k, m, k));
  HERD_TRY(lt_layout(&d.c, c_type, n, m, n));

  HERD_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.preference),
                    "cublasLtMatmulPreferenceCreate(%s)", shape);
  HERD_TRY(lt_preference(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                         (uint64_t)workspace_bytes));
  HERD_TRY(
      lt_preference(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(b)));
  HERD_TRY(
      lt_preference(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(a)));
  HERD_TRY(
      lt_preference(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(c)));
  HERD_TRY(
      lt_preference(d.preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(c)));

  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  HERD_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, d.operation, d.a, d.b, d.c, d.c,
                                                   d.preference, 1, &heuristic, &found),
                    "cublasLtMatmulAlgoGetHeuristic(%s)", shape);
  if (found < 1)
    return herd_seterr(HERD_EDEVICE, "cublasLtMatmulAlgoGetHeuristic(%s): no algorithm", shape);
  // c is both C (read when beta != 0) and D (written): cuBLASLt allows it with equal layouts.
  HERD_CUBLAS_CHECK(cublasLtMatmul(handle, d.operation, &alpha, b, d.a, a, d.b, &beta, c, d.c, c,
                                   d.c, &heuristic.algo, workspace, workspace_bytes, stream),
                    "cublasLtMatmul(%s)", shape);
  return herd_cuda_launched("cublasLtMatmul");
}

// ---------------------------------------------------------------- rotary embeddings

constexpr int ROPE_MAX_HALF = HERD_CUDA_ROPE_MAX_HEAD_DIM / 2;

// theta^(-2i/D), passed by value (at most 1 KiB of kernel parameters).
struct RopeFrequencies {
  float inv_freq[ROPE_MAX_HALF];
};

// One block per row: cos and sin of the row's angles (position * inv_freq in f32, as Hugging
// Face and the CPU compute them) once, then every head. Backward applies the transpose (the
// rotation by -angle) and accumulates. A thread owns both halves of a pair, so out may be inp.
template <bool backward>
__global__ void rope_kernel(float *out, const float *inp, const int32_t *positions, int heads,
                            int head_dim, RopeFrequencies frequencies) {
  __shared__ float cosines[ROPE_MAX_HALF], sines[ROPE_MAX_HALF];
  int half = head_dim / 2;
  int64_t row = blockIdx.x;
  float position = (float)positions[row];
  for (int i = threadIdx.x; i < half; i += blockDim.x)
    sincosf(position * frequencies.inv_freq[i], &sines[i], &cosines[i]);
  __syncthreads();
  for (int e = threadIdx.x; e < heads * half; e += blockDim.x) {
    int head = e / half, i = e % half;
    int64_t base = (row * heads + head) * head_dim;
    float cs = cosines[i], sn = sines[i];
    float x1 = inp[base + i], x2 = inp[base + i + half];
    if (backward) {
      out[base + i] += x1 * cs + x2 * sn;
      out[base + i + half] += x2 * cs - x1 * sn;
    } else {
      out[base + i] = x1 * cs - x2 * sn;
      out[base + i + half] = x2 * cs + x1 * sn;
    }
  }
}

template <bool backward>
int rope(float *out, const float *inp, const int32_t *positions, int n, int heads, int head_dim,
         float theta) {
  const int half = head_dim / 2;
  if (n <= 0 || heads <= 0 || half <= 0) return HERD_OK;
  if (head_dim > HERD_CUDA_ROPE_MAX_HEAD_DIM)
    return herd_seterr(HERD_EINVAL, "rope: head_dim %d is above %d", head_dim,
                       HERD_CUDA_ROPE_MAX_HEAD_DIM);
  RopeFrequencies frequencies = {};
  // rounded to f32 as Hugging Face's LlamaRotaryEmbedding (and attention.c) keep them
  for (int i = 0; i < half; i++)
    frequencies.inv_freq[i] = (float)pow(theta, -(double)(2 * i) / (2 * half));
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  rope_kernel<backward>
      <<<n, THREADS, 0, stream>>>(out, inp, positions, heads, head_dim, frequencies);
  return herd_cuda_launched(backward ? "rope_backward" : "rope_forward");
}

// ---------------------------------------------------------------- AdamW

struct AdamwRanges {
  int64_t offset[HERD_CUDA_ADAMW_MAX_RANGES], size[HERD_CUDA_ADAMW_MAX_RANGES];
  float decay[HERD_CUDA_ADAMW_MAX_RANGES];  // lr * weight_decay, or 0
};

// blockIdx.y picks the range; the arithmetic is herd_model_step's, expression for expression.
__global__ void adamw_kernel(float *params, const float *grads, float *m, float *v,
                             AdamwRanges ranges, float lr, float beta1, float beta2, float eps,
                             float bc1, float bc2, float clip) {
  int r = blockIdx.y;
  int64_t offset = ranges.offset[r], size = ranges.size[r];
  float decay = ranges.decay[r];
  GRID_STRIDE(j, size) {
    int64_t i = offset + j;
    float g = grads[i] * clip;
    float m1 = beta1 * m[i] + (1 - beta1) * g;
    float m2 = beta2 * v[i] + (1 - beta2) * g * g;
    m[i] = m1;
    v[i] = m2;
    float mhat = m1 / bc1, vhat = m2 / bc2;
    float w = params[i];
    w -= decay * w;  // decoupled weight decay (PyTorch AdamW order)
    w -= lr * mhat / (sqrtf(vhat) + eps);
    params[i] = w;
  }
}

// ---------------------------------------------------------------- global norm

// Blocks of a sum of squares over n elements: a function of n alone, so the bits are too.
int norm_blocks(int64_t n) {
  int64_t blocks = (n + THREADS * 8 - 1) / (THREADS * 8);
  return (int)(blocks < NORM_MAX_BLOCKS ? blocks : NORM_MAX_BLOCKS);
}

template <bool kSquare>
__global__ void sum_blocks_kernel(const float *a, int64_t n, double *partials) {
  double acc = 0;
  GRID_STRIDE(i, n) acc += kSquare ? (double)a[i] * a[i] : (double)a[i];
  acc = block_reduce(acc, Sum<double>());
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void add_partials_kernel(const double *partials, int count, double *total) {
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_reduce(acc, Sum<double>());
  if (threadIdx.x == 0) *total += acc;
}

}  // namespace

// ---------------------------------------------------------------- matmul, linear

extern "C" int herd_cuda_matmul(float *c, const float *a, const float *b, int m, int n, int k,
                                int transpose_a, int transpose_b, float alpha, float beta) {
  if (m <= 0 || n <= 0) return HERD_OK;
  if (k <= 0)  // only scales c, as herd_cpu_matmul does it
    return launch_elementwise("matmul_scale_c", scale_matrix_kernel, (int64_t)m * n, c,
                              (int64_t)m * n, beta);
  return lt_matmul(c, CUDA_R_32F, a, b, CUDA_R_32F, m, n, k, transpose_a, transpose_b, alpha, beta);
}

extern "C" int herd_cuda_linear_forward(float *out, const float *inp, const float *weight,
                                        const float *bias, int n, int c, int oc) {
  // out(N,OC) = inp(N,C) @ weight(OC,C)^T
  HERD_TRY(herd_cuda_matmul(out, inp, weight, n, oc, c, 0, 1, 1.0f, 0.0f));
  if (!bias || n <= 0 || oc <= 0) return HERD_OK;
  return launch_elementwise("linear_add_bias", add_bias_kernel, (int64_t)n * oc, out, bias,
                            (int64_t)n * oc, oc);
}

extern "C" int herd_cuda_linear_backward(float *dinp, float *dweight, float *dbias,
                                         const float *dout, const float *inp, const float *weight,
                                         int n, int c, int oc) {
  // dinp(N,C) += dout(N,OC) @ weight(OC,C)
  if (dinp) HERD_TRY(herd_cuda_matmul(dinp, dout, weight, n, c, oc, 0, 0, 1.0f, 1.0f));
  // dweight(OC,C) += dout(N,OC)^T @ inp(N,C)
  if (dweight) HERD_TRY(herd_cuda_matmul(dweight, dout, inp, oc, c, n, 1, 0, 1.0f, 1.0f));
  if (dbias) HERD_TRY(column_sums(dbias, n, oc, BiasGradTerm{dout, oc}, "linear_dbias"));
  return HERD_OK;
}

// ---------------------------------------------------------------- embedding

extern "C" int herd_cuda_embedding_forward(float *out, const int32_t *tokens, const float *table,
                                           int n, int vocab, int c) {
  if (n < 0 || vocab < 0 || c < 0)
    return herd_seterr(HERD_EINVAL, "embedding: bad shape n=%d vocab=%d c=%d", n, vocab, c);
  int bad_index, bad_token;
  HERD_TRY(first_out_of_range(tokens, n, 0, vocab, &bad_index, &bad_token));
  if (bad_index >= 0)
    return herd_seterr(HERD_EINVAL, "embedding: token %d at position %d is outside [0, %d)",
                       bad_token, bad_index, vocab);
  return launch_rows("embedding_forward", embedding_forward_kernel, n, out, tokens, table, c);
}

extern "C" int herd_cuda_embedding_backward(float *dtable, const float *dout, const int32_t *tokens,
                                            int n, int c) {
  return scatter_rows(dtable, tokens, n, c, EmbeddingRowTerm{dout, c}, "embedding_backward");
}

// ---------------------------------------------------------------- RMSNorm, SwiGLU, softmax

extern "C" int herd_cuda_rmsnorm_forward(float *out, float *rstd, const float *inp,
                                         const float *weight, int n, int c, float eps) {
  return launch_rows("rmsnorm_forward", rmsnorm_forward_kernel, n, out, rstd, inp, weight, c, eps);
}

extern "C" int herd_cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout,
                                          const float *inp, const float *weight, const float *rstd,
                                          int n, int c) {
  if (dinp)
    HERD_TRY(launch_rows("rmsnorm_backward", rmsnorm_backward_kernel, n, dinp, dout, inp, weight,
                         rstd, c));
  if (dweight)
    HERD_TRY(
        column_sums(dweight, n, c, RmsnormWeightGradTerm{dout, inp, rstd, c}, "rmsnorm_dweight"));
  return HERD_OK;
}

extern "C" int herd_cuda_swiglu_forward(float *out, const float *gate, const float *up, int64_t n) {
  return launch_elementwise("swiglu_forward", swiglu_forward_kernel, n, out, gate, up, n);
}

extern "C" int herd_cuda_swiglu_backward(float *dgate, float *dup, const float *dout,
                                         const float *gate, const float *up, int64_t n) {
  if (!dgate && !dup) return HERD_OK;
  return launch_elementwise("swiglu_backward", swiglu_backward_kernel, n, dgate, dup, dout, gate,
                            up, n);
}

extern "C" int herd_cuda_softmax_forward(float *out, const float *inp, int n, int c) {
  if (c <= 0) return HERD_OK;
  return launch_rows("softmax_forward", softmax_forward_kernel, n, out, inp, c);
}

extern "C" int herd_cuda_softmax_backward(float *dinp, const float *dout, const float *out, int n,
                                          int c) {
  if (c <= 0) return HERD_OK;
  return launch_rows("softmax_backward", softmax_backward_kernel, n, dinp, dout, out, c);
}

// ---------------------------------------------------------------- weighted NLL, scalar head

extern "C" int herd_cuda_weighted_nll(float *losses, float *dlogits, const float *logits,
                                      const int32_t *targets, const float *weights, float dloss,
                                      int n, int v) {
  if (n < 0 || v < 1) return herd_seterr(HERD_EINVAL, "weighted_nll: bad shape n=%d v=%d", n, v);
  int bad_row, bad_target;
  HERD_TRY(first_out_of_range(targets, n, -1, v, &bad_row, &bad_target));
  if (bad_row >= 0)
    return herd_seterr(HERD_EINVAL, "weighted_nll: target %d of row %d is outside [-1, %d)",
                       bad_target, bad_row, v);
  return launch_rows("weighted_nll", weighted_nll_kernel, n, losses, dlogits, logits, targets,
                     weights, dloss, v);
}

extern "C" int herd_cuda_scalar_head_forward(float *out, const float *hidden, const float *weight,
                                             float bias, const int32_t *positions, int p, int n,
                                             int c) {
  if (p < 0 || n < 0 || c < 0)
    return herd_seterr(HERD_EINVAL, "scalar_head: bad shape p=%d n=%d c=%d", p, n, c);
  int bad_k, bad_position;
  HERD_TRY(first_out_of_range(positions, p, 0, n, &bad_k, &bad_position));
  if (bad_k >= 0)
    return herd_seterr(HERD_EINVAL, "scalar_head: positions[%d] = %d is outside [0, %d)", bad_k,
                       bad_position, n);
  return launch_rows("scalar_head_forward", scalar_head_forward_kernel, p, out, hidden, weight,
                     bias, positions, c);
}

extern "C" int herd_cuda_scalar_head_backward(float *dhidden, float *dweight, float *dbias,
                                              const float *dout, const float *hidden,
                                              const float *weight, const int32_t *positions, int p,
                                              int c) {
  if (dhidden)
    HERD_TRY(scatter_rows(dhidden, positions, p, c, ScalarHeadRowTerm{dout, weight},
                          "scalar_head_dhidden"));
  if (dweight)
    HERD_TRY(column_sums(dweight, p, c, ScalarHeadWeightGradTerm{dout, hidden, positions, c},
                         "scalar_head_dweight"));
  if (dbias) {
    cudaStream_t stream;
    HERD_TRY(herd_cuda_stream(&stream));
    add_sum_kernel<<<1, THREADS, 0, stream>>>(dbias, dout, p > 0 ? p : 0);
    HERD_TRY(herd_cuda_launched("scalar_head_dbias"));
  }
  return HERD_OK;
}

// ---------------------------------------------------------------- element-wise

extern "C" int herd_cuda_add(float *out, const float *a, const float *b, int64_t n) {
  return launch_elementwise("add", add_kernel, n, out, a, b, n);
}

extern "C" int herd_cuda_add_backward(float *da, float *db, const float *dout, int64_t n) {
  if (!da && !db) return HERD_OK;
  return launch_elementwise("add_backward", add_backward_kernel, n, da, db, dout, n);
}

extern "C" int herd_cuda_mul(float *out, const float *a, const float *b, int64_t n) {
  return launch_elementwise("mul", mul_kernel, n, out, a, b, n);
}

extern "C" int herd_cuda_mul_backward(float *da, float *db, const float *dout, const float *a,
                                      const float *b, int64_t n) {
  if (!da && !db) return HERD_OK;
  return launch_elementwise("mul_backward", mul_backward_kernel, n, da, db, dout, a, b, n);
}

extern "C" int herd_cuda_scale(float *out, const float *a, float s, int64_t n) {
  return launch_elementwise("scale", scale_kernel, n, out, a, s, n);
}

extern "C" int herd_cuda_scale_backward(float *da, const float *dout, float s, int64_t n) {
  return launch_elementwise("scale_backward", scale_backward_kernel, n, da, dout, s, n);
}

// ---------------------------------------------------------------- global norm

namespace {

// *total = the sum over `count` device arrays of their elements (kSquare: of their squares),
// in double: block sums fixed by each length, added in order, so the bits repeat. Waits.
template <bool kSquare>
int sum_arrays(double *total, const float *const *arrays, const int64_t *lengths, int count,
               const char *what) {
  *total = 0;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  DeviceBuffer<double> sum, partials;
  HERD_TRY(sum.allocate(1));
  HERD_TRY(partials.allocate(NORM_MAX_BLOCKS));
  HERD_CUDA_CHECK(cudaMemsetAsync(sum.ptr, 0, sizeof(double), stream), "cudaMemsetAsync(%zu bytes)",
                  sizeof(double));
  for (int i = 0; i < count; i++) {
    if (lengths[i] <= 0) continue;
    int blocks = norm_blocks(lengths[i]);
    // partials is reused: the previous array's add_partials ran before, in stream order
    sum_blocks_kernel<kSquare><<<blocks, THREADS, 0, stream>>>(arrays[i], lengths[i], partials.ptr);
    HERD_TRY(herd_cuda_launched(what));
    add_partials_kernel<<<1, THREADS, 0, stream>>>(partials.ptr, blocks, sum.ptr);
    HERD_TRY(herd_cuda_launched(what));
  }
  HERD_CUDA_CHECK(cudaMemcpyAsync(total, sum.ptr, sizeof *total, cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync(device to host, %zu bytes)", sizeof *total);
  HERD_CUDA_CHECK(cudaStreamSynchronize(stream), "cudaStreamSynchronize (%s)", what);
  return HERD_OK;
}

}  // namespace

extern "C" int herd_cuda_global_norm(double *norm, const float *const *arrays,
                                     const int64_t *lengths, int count) {
  double squares;
  *norm = 0;
  HERD_TRY(sum_arrays<true>(&squares, arrays, lengths, count, "global_norm"));
  *norm = sqrt(squares);
  return HERD_OK;
}

extern "C" int herd_cuda_sum(double *out, const float *a, int64_t n) {
  return sum_arrays<false>(out, &a, &n, 1, "sum");
}

// ---------------------------------------------------------------- rope

extern "C" int herd_cuda_rope_forward(float *out, const float *inp, const int32_t *positions, int n,
                                      int heads, int head_dim, float theta) {
  return rope<false>(out, inp, positions, n, heads, head_dim, theta);
}

extern "C" int herd_cuda_rope_backward(float *dinp, const float *dout, const int32_t *positions,
                                       int n, int heads, int head_dim, float theta) {
  return rope<true>(dinp, dout, positions, n, heads, head_dim, theta);
}

// ---------------------------------------------------------------- AdamW

extern "C" int herd_cuda_adamw(float *params, const float *grads, float *m, float *v,
                               const herd_cuda_param_range *ranges, int n_ranges,
                               const herd_adamw *opt, int64_t step, float clip) {
  if (!opt) return herd_seterr(HERD_EINVAL, "adamw: no optimizer settings");
  if (step < 1) return herd_seterr(HERD_EINVAL, "adamw: step %lld < 1", (long long)step);
  if (n_ranges < 0 || n_ranges > HERD_CUDA_ADAMW_MAX_RANGES)
    return herd_seterr(HERD_EINVAL, "adamw: %d ranges (at most %d)", n_ranges,
                       HERD_CUDA_ADAMW_MAX_RANGES);
  AdamwRanges device_ranges = {};
  int64_t longest = 0;
  for (int r = 0; r < n_ranges; r++) {
    if (ranges[r].offset < 0 || ranges[r].size < 0)
      return herd_seterr(HERD_EINVAL, "adamw: range %d has offset %lld and size %lld", r,
                         (long long)ranges[r].offset, (long long)ranges[r].size);
    device_ranges.offset[r] = ranges[r].offset;
    device_ranges.size[r] = ranges[r].size;
    device_ranges.decay[r] = ranges[r].decay ? opt->lr * opt->weight_decay : 0.0f;
    if (ranges[r].size > longest) longest = ranges[r].size;
  }
  if (longest == 0) return HERD_OK;
  // bias corrections as herd_model_step computes them: in double from the f32 betas
  float b1 = opt->beta1, b2 = opt->beta2;
  float bc1 = (float)(1 - pow(b1, (double)step));
  float bc2 = (float)(1 - pow(b2, (double)step));
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  dim3 grid(grid_for(longest), n_ranges);
  adamw_kernel<<<grid, THREADS, 0, stream>>>(params, grads, m, v, device_ranges, opt->lr, b1, b2,
                                             opt->eps, bc1, bc2, clip);
  return herd_cuda_launched("adamw");
}

// ---------------------------------------------------------------- bf16

extern "C" int herd_cuda_f32_to_bf16(uint16_t *out, const float *in, int64_t n) {
  return launch_elementwise("f32_to_bf16", f32_to_bf16_kernel, n, out, in, n);
}

extern "C" int herd_cuda_bf16_to_f32(float *out, const uint16_t *in, int64_t n) {
  return launch_elementwise("bf16_to_f32", bf16_to_f32_kernel, n, out, in, n);
}

extern "C" int herd_cuda_matmul_bf16(void *c, herd_dtype c_dtype, const uint16_t *a,
                                     const uint16_t *b, int m, int n, int k, int transpose_a,
                                     int transpose_b, float alpha, float beta) {
  if (c_dtype != HERD_F32 && c_dtype != HERD_BF16)
    return herd_seterr(HERD_EINVAL, "matmul_bf16: c must be f32 or bf16, not %s",
                       herd_dtype_name(c_dtype));
  if (m <= 0 || n <= 0) return HERD_OK;
  int64_t count = (int64_t)m * n;
  if (k <= 0)
    return c_dtype == HERD_F32 ? launch_elementwise("matmul_scale_c", scale_matrix_kernel, count,
                                                    static_cast<float *>(c), count, beta)
                               : launch_elementwise("matmul_scale_c_bf16", scale_bf16_matrix_kernel,
                                                    count, static_cast<uint16_t *>(c), count, beta);
  return lt_matmul(c, c_dtype == HERD_F32 ? CUDA_R_32F : CUDA_R_16BF, a, b, CUDA_R_16BF, m, n, k,
                   transpose_a, transpose_b, alpha, beta);
}
