// cuBLASLt's matmul emulated on the host for t/cuda_emu/run (see cublasLt.h).
#include "cublasLt.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>

struct cublasLtContext {
  int unused;
};

struct cublasLtMatmulDescOpaque {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t transa, transb;
};

struct cublasLtMatrixLayoutOpaque {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

struct cublasLtMatmulPreferenceOpaque {
  uint64_t max_workspace;
  uint32_t alignment[4];  // A, B, C, D in bytes
};

namespace {

// What the heuristic promised the algorithm, kept in cublasLtMatmulAlgo_t::data.
enum { ALGO_MAGIC = 0, ALGO_ALIGNMENT = 1 /* ..4 */, ALGO_WORKSPACE = 5 };
const uint64_t MAGIC = 0x656d752d6c74ull;

cublasStatus_t invalid(const char *format, ...) __attribute__((format(printf, 1, 2)));
cublasStatus_t invalid(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "cuda_emu (cuBLASLt): ");
  vfprintf(stderr, format, args);
  fprintf(stderr, "\n");
  va_end(args);
  return CUBLAS_STATUS_INVALID_VALUE;
}

bool known_type(cudaDataType_t type) {
  return type == CUDA_R_32F || type == CUDA_R_16BF;
}

size_t element_bytes(cudaDataType_t type) {
  return type == CUDA_R_16BF ? 2 : 4;
}

// Bytes spanned by a column-major matrix: (cols - 1) ld + rows elements.
size_t span_bytes(const cublasLtMatrixLayoutOpaque *l) {
  return ((size_t)(l->cols - 1) * (size_t)l->ld + (size_t)l->rows) * element_bytes(l->type);
}

// The shapes agree: op(A) m x k, op(B) k x n, C and D m x n, ld >= rows, types f32 x f32 -> f32
// or bf16 x bf16 -> f32 or bf16, C and D alike. *m, *n, *k on success.
cublasStatus_t check_shapes(const cublasLtMatmulDescOpaque *desc,
                            const cublasLtMatrixLayoutOpaque *a,
                            const cublasLtMatrixLayoutOpaque *b,
                            const cublasLtMatrixLayoutOpaque *c,
                            const cublasLtMatrixLayoutOpaque *d, uint64_t *m, uint64_t *n,
                            uint64_t *k) {
  if (!desc || !a || !b || !c || !d) return invalid("a NULL descriptor");
  if (desc->compute != CUBLAS_COMPUTE_32F || desc->scale != CUDA_R_32F)
    return invalid("compute type %d, scale type %d (the emulation has COMPUTE_32F, R_32F)",
                   (int)desc->compute, (int)desc->scale);
  *m = desc->transa == CUBLAS_OP_N ? a->rows : a->cols;
  *k = desc->transa == CUBLAS_OP_N ? a->cols : a->rows;
  const uint64_t kb = desc->transb == CUBLAS_OP_N ? b->rows : b->cols;
  *n = desc->transb == CUBLAS_OP_N ? b->cols : b->rows;
  if (kb != *k || c->rows != *m || c->cols != *n)
    return invalid("op(A) %llux%llu, op(B) %llux%llu, C %llux%llu do not agree",
                   (unsigned long long)*m, (unsigned long long)*k, (unsigned long long)kb,
                   (unsigned long long)*n, (unsigned long long)c->rows,
                   (unsigned long long)c->cols);
  if (d->rows != c->rows || d->cols != c->cols || d->ld != c->ld || d->type != c->type)
    return invalid("C and D layouts differ");
  for (const cublasLtMatrixLayoutOpaque *l : {a, b, c})
    if (l->rows == 0 || l->cols == 0 || l->ld < (int64_t)l->rows)
      return invalid("a %llux%llu layout with leading dimension %lld", (unsigned long long)l->rows,
                     (unsigned long long)l->cols, (long long)l->ld);
  if (a->type != b->type || (a->type == CUDA_R_32F && c->type != CUDA_R_32F))
    return invalid("types A %d, B %d, C %d", (int)a->type, (int)b->type, (int)c->type);
  return CUBLAS_STATUS_SUCCESS;
}

float load(const void *base, cudaDataType_t type, size_t index) {
  if (type == CUDA_R_32F) return static_cast<const float *>(base)[index];
  uint32_t bits = (uint32_t) static_cast<const uint16_t *>(base)[index] << 16;
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

// bf16 stores round to nearest even; a NaN stays a (quiet) NaN.
void store(void *base, cudaDataType_t type, size_t index, float value) {
  if (type == CUDA_R_32F) {
    static_cast<float *>(base)[index] = value;
    return;
  }
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u)
    bits = (bits | 0x00400000u);
  else
    bits += 0x7fffu + ((bits >> 16) & 1u);
  static_cast<uint16_t *>(base)[index] = (uint16_t)(bits >> 16);
}

bool overlap(const void *p, size_t p_bytes, const void *q, size_t q_bytes) {
  const char *a = static_cast<const char *>(p), *b = static_cast<const char *>(q);
  return a < b + q_bytes && b < a + p_bytes;
}

}  // namespace

const char *cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    default:
      return "emulated cuBLASLt error";
  }
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
  if (!handle) return invalid("cublasLtCreate(NULL)");
  *handle = new (std::nothrow) cublasLtContext{};
  return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  *desc = new (std::nothrow) cublasLtMatmulDescOpaque{compute, scale, CUBLAS_OP_N, CUBLAS_OP_N};
  return *desc ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attribute,
                                              const void *buffer, size_t bytes) {
  if (!desc || !buffer) return invalid("cublasLtMatmulDescSetAttribute: NULL");
  if (attribute != CUBLASLT_MATMUL_DESC_TRANSA && attribute != CUBLASLT_MATMUL_DESC_TRANSB)
    return invalid("cublasLtMatmulDescSetAttribute(%d): not emulated", (int)attribute);
  if (bytes != sizeof(int32_t))
    return invalid("cublasLtMatmulDescSetAttribute(%d): %zu bytes, want 4", (int)attribute, bytes);
  int32_t op;
  memcpy(&op, buffer, sizeof op);
  if (op != CUBLAS_OP_N && op != CUBLAS_OP_T)
    return invalid("cublasLtMatmulDescSetAttribute: operation %d", op);
  (attribute == CUBLASLT_MATMUL_DESC_TRANSA ? desc->transa : desc->transb) = op;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (!known_type(type)) return invalid("cublasLtMatrixLayoutCreate: type %d", (int)type);
  *layout = new (std::nothrow) cublasLtMatrixLayoutOpaque{type, rows, cols, ld};
  return *layout ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *preference) {
  // cuBLASLt's defaults: no workspace, 256-byte alignment of every matrix
  *preference = new (std::nothrow) cublasLtMatmulPreferenceOpaque{0, {256, 256, 256, 256}};
  return *preference ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t preference) {
  delete preference;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t preference,
                                                    cublasLtMatmulPreferenceAttributes_t attribute,
                                                    const void *buffer, size_t bytes) {
  if (!preference || !buffer) return invalid("cublasLtMatmulPreferenceSetAttribute: NULL");
  if (attribute == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
    if (bytes != sizeof(uint64_t))
      return invalid("MAX_WORKSPACE_BYTES given in %zu bytes, want 8", bytes);
    memcpy(&preference->max_workspace, buffer, sizeof(uint64_t));
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attribute < CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES ||
      attribute > CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)
    return invalid("cublasLtMatmulPreferenceSetAttribute(%d): not emulated", (int)attribute);
  if (bytes != sizeof(uint32_t))
    return invalid("MIN_ALIGNMENT attribute %d given in %zu bytes, want 4", (int)attribute, bytes);
  uint32_t alignment;
  memcpy(&alignment, buffer, sizeof alignment);
  if (alignment == 0 || (alignment & (alignment - 1)))
    return invalid("alignment %u is not a power of two", alignment);
  preference->alignment[attribute - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = alignment;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t preference, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *found) {
  if (!handle || !preference || !results || !found || requested < 1)
    return invalid("cublasLtMatmulAlgoGetHeuristic: bad arguments");
  uint64_t m, n, k;
  cublasStatus_t status = check_shapes(desc, a, b, c, d, &m, &n, &k);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  memset(&results[0], 0, sizeof results[0]);
  results[0].algo.data[ALGO_MAGIC] = MAGIC;
  for (int i = 0; i < 4; i++) results[0].algo.data[ALGO_ALIGNMENT + i] = preference->alignment[i];
  results[0].algo.data[ALGO_WORKSPACE] = preference->max_workspace;
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *found = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *a, cublasLtMatrixLayout_t a_layout, const void *b,
                              cublasLtMatrixLayout_t b_layout, const void *beta, const void *c,
                              cublasLtMatrixLayout_t c_layout, void *d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspace_bytes, cudaStream_t) {
  cudaError_t error;
  if (emu_skip_async_work(&error))
    return error == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
  if (!handle || !alpha || !beta) return invalid("cublasLtMatmul: NULL handle, alpha or beta");
  uint64_t m, n, k;
  cublasStatus_t status = check_shapes(desc, a_layout, b_layout, c_layout, d_layout, &m, &n, &k);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  if (!algo || algo->data[ALGO_MAGIC] != MAGIC)
    return invalid("cublasLtMatmul: an algorithm not from cublasLtMatmulAlgoGetHeuristic");
  if (workspace_bytes > algo->data[ALGO_WORKSPACE])
    return invalid("cublasLtMatmul: %zu bytes of workspace, the heuristic was told %llu",
                   workspace_bytes, (unsigned long long)algo->data[ALGO_WORKSPACE]);
  if (workspace_bytes && !emu_is_device_range(workspace, workspace_bytes))
    return invalid("cublasLtMatmul: the workspace is not device memory");
  float scale_alpha, scale_beta;
  memcpy(&scale_alpha, alpha, sizeof scale_alpha);
  memcpy(&scale_beta, beta, sizeof scale_beta);
  const bool reads_c = scale_beta != 0;  // beta = 0: C is not read (it may hold NaN)
  const void *pointers[4] = {a, b, c, d};
  const cublasLtMatrixLayoutOpaque *layouts[4] = {a_layout, b_layout, c_layout, d_layout};
  const char names[] = "ABCD";
  for (int i = 0; i < 4; i++) {
    if (i == 2 && !reads_c) continue;
    const size_t bytes = span_bytes(layouts[i]);
    if (!emu_is_device_range(pointers[i], bytes))
      return invalid("cublasLtMatmul: %c [%p, +%zu bytes) is not inside one device allocation",
                     names[i], pointers[i], bytes);
    const uint64_t alignment = algo->data[ALGO_ALIGNMENT + i];
    if ((uintptr_t)pointers[i] % alignment)
      return invalid("cublasLtMatmul: %c at %p is not %llu-byte aligned as the heuristic was told",
                     names[i], pointers[i], (unsigned long long)alignment);
  }
  const size_t d_bytes = span_bytes(d_layout);
  if (overlap(d, d_bytes, a, span_bytes(a_layout)) || overlap(d, d_bytes, b, span_bytes(b_layout)))
    return invalid("cublasLtMatmul: D overlaps A or B");
  if (reads_c && c != d && overlap(d, d_bytes, c, span_bytes(c_layout)))
    return invalid("cublasLtMatmul: D overlaps C without being C");

  EmuDeviceAccess access;
  const cudaDataType_t ab_type = a_layout->type, cd_type = c_layout->type;
  const size_t lda = (size_t)a_layout->ld, ldb = (size_t)b_layout->ld, ldc = (size_t)c_layout->ld;
  const bool ta = desc->transa == CUBLAS_OP_T, tb = desc->transb == CUBLAS_OP_T;
  for (uint64_t j = 0; j < n; j++)
    for (uint64_t i = 0; i < m; i++) {
      float sum = 0;  // f32 products and sums, as CUBLAS_COMPUTE_32F
      for (uint64_t l = 0; l < k; l++) {
        const float x = load(a, ab_type, ta ? l + i * lda : i + l * lda);
        const float y = load(b, ab_type, tb ? j + l * ldb : l + j * ldb);
        sum += x * y;
      }
      float value = scale_alpha * sum;
      if (reads_c) value += scale_beta * load(c, cd_type, i + j * ldc);
      store(d, cd_type, i + j * ldc, value);
    }
  return CUBLAS_STATUS_SUCCESS;
}
