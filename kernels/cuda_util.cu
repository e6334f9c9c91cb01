// The CUDA runtime of herd: errors, the stream, the cuBLASLt handle, the caching allocator and
// copies (cuda.h, cuda_internal.h).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "cuda.h"
#include "cuda_internal.h"

// ---------------------------------------------------------------- errors

// "<call>" from a printf-style description.
static void describe_call(char *buf, size_t size, const char *format, va_list args) {
  vsnprintf(buf, size, format, args);
}

int herd_cuda_fail(cudaError_t status, const char *call_format, ...) {
  char call[512];
  va_list args;
  va_start(args, call_format);
  describe_call(call, sizeof call, call_format, args);
  va_end(args);
  cudaGetLastError();  // a non-sticky error would otherwise be reported again by the next check
  int code = status == cudaErrorMemoryAllocation ? HERD_ENOMEM
             : status == cudaErrorInvalidValue   ? HERD_EINVAL
                                                 : HERD_EDEVICE;
  return herd_seterr(code, "%s: %s (%s)", call, cudaGetErrorString(status),
                     cudaGetErrorName(status));
}

int herd_cublas_fail(cublasStatus_t status, const char *call_format, ...) {
  char call[512];
  va_list args;
  va_start(args, call_format);
  describe_call(call, sizeof call, call_format, args);
  va_end(args);
  int code = status == CUBLAS_STATUS_ALLOC_FAILED    ? HERD_ENOMEM
             : status == CUBLAS_STATUS_INVALID_VALUE ? HERD_EINVAL
                                                     : HERD_EDEVICE;
  return herd_seterr(code, "%s: %s (%s)", call, cublasLtGetStatusName(status),
                     cublasLtGetStatusString(status));
}

// ---------------------------------------------------------------- the stream

static std::mutex setup_mutex;  // guards the creation of the stream and the cuBLASLt handle
static std::atomic<cudaStream_t> herd_stream{nullptr};

int herd_cuda_stream(cudaStream_t *stream) {
  cudaStream_t existing = herd_stream.load(std::memory_order_acquire);
  if (!existing) {
    std::lock_guard<std::mutex> lock(setup_mutex);
    existing = herd_stream.load(std::memory_order_acquire);
    if (!existing) {
      // A blocking stream (not cudaStreamNonBlocking): work other libraries queue on the legacy
      // default stream stays ordered with herd's.
      HERD_CUDA_CHECK(cudaStreamCreateWithFlags(&existing, cudaStreamDefault), "cudaStreamCreate");
      herd_stream.store(existing, std::memory_order_release);
    }
  }
  *stream = existing;
  return HERD_OK;
}

// HERD_CUDA_SYNC=1 (any value but "" and "0"): wait after every kernel.
static bool sync_after_each_kernel() {
  static const bool wanted = [] {
    const char *value = getenv("HERD_CUDA_SYNC");
    return value && *value && strcmp(value, "0") != 0;
  }();
  return wanted;
}

int herd_cuda_launched(const char *kernel) {
  HERD_CUDA_CHECK(cudaGetLastError(), "kernel %s (launch)", kernel);
  if (sync_after_each_kernel()) {
    cudaStream_t stream;
    HERD_TRY(herd_cuda_stream(&stream));
    HERD_CUDA_CHECK(cudaStreamSynchronize(stream), "kernel %s (run, HERD_CUDA_SYNC=1)", kernel);
  }
  return HERD_OK;
}

int herd_cuda_synchronize(void) {
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  HERD_CUDA_CHECK(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  return HERD_OK;
}

// ---------------------------------------------------------------- cuBLASLt

// NVIDIA recommends 32 MiB of cuBLASLt workspace on Hopper (4 MiB on earlier GPUs). One
// workspace serves every matmul because they all run in order on herd's stream. It comes from
// cudaMalloc directly, outside the caching allocator and its statistics.
static const size_t lt_workspace_bytes = (size_t)32 << 20;
static std::atomic<cublasLtHandle_t> lt_handle{nullptr};
static void *lt_workspace = nullptr;  // written before lt_handle is published

int herd_cublaslt(cublasLtHandle_t *handle, void **workspace, size_t *workspace_bytes) {
  cublasLtHandle_t existing = lt_handle.load(std::memory_order_acquire);
  if (!existing) {
    std::lock_guard<std::mutex> lock(setup_mutex);
    existing = lt_handle.load(std::memory_order_acquire);
    if (!existing) {
      if (!lt_workspace)
        HERD_CUDA_CHECK(cudaMalloc(&lt_workspace, lt_workspace_bytes),
                        "cudaMalloc(%zu bytes, cuBLASLt workspace)", lt_workspace_bytes);
      HERD_CUBLAS_CHECK(cublasLtCreate(&existing), "cublasLtCreate");
      lt_handle.store(existing, std::memory_order_release);
    }
  }
  *handle = existing;
  *workspace = lt_workspace;
  *workspace_bytes = lt_workspace_bytes;
  return HERD_OK;
}

// ---------------------------------------------------------------- the caching allocator

namespace {

// Blocks are cudaMalloc'd at their bucket size and kept, when freed, on the free list of that
// size. Never destroyed (blocks may be freed from other objects' destructors at exit; the
// driver reclaims device memory when the process ends).
struct Allocator {
  std::mutex mutex;
  std::unordered_map<size_t, std::vector<void *>> free_blocks;  // bucket size -> blocks
  std::unordered_map<void *, size_t> live_blocks;               // block -> bucket size
  herd_cuda_memory_stats stats = {0, 0, 0};
};

Allocator &allocator() {
  static Allocator *instance = new Allocator;
  return *instance;
}

const size_t small_limit = (size_t)1 << 20;      // up to 1 MiB: powers of two
const size_t largest_request = (size_t)1 << 62;  // beyond this, rounding would overflow

// The bucket of a request: a power of two (at least 512 bytes) up to 1 MiB; above, sizes in
// (2^(p-1), 2^p] round up to a multiple of 2^(p-4): 8 buckets per doubling, at most 12.5% waste.
size_t bucket_size(size_t bytes) {
  size_t power = 512;
  while (power < bytes) power <<= 1;
  if (power <= small_limit) return power;
  size_t step = power / 16;
  return (bytes + step - 1) / step * step;
}

// Gives every cached block back to CUDA; the caller holds the mutex. Waits for the device first:
// a freed block may still be read by queued kernels.
int release_cached(Allocator &a) {
  HERD_CUDA_CHECK(cudaDeviceSynchronize(),
                  "cudaDeviceSynchronize (before releasing cached blocks)");
  for (auto &bucket : a.free_blocks)
    for (void *block : bucket.second)
      HERD_CUDA_CHECK(cudaFree(block), "cudaFree(%zu bytes)", bucket.first);
  a.free_blocks.clear();
  a.stats.cached = 0;
  return HERD_OK;
}

// A new block from CUDA; when CUDA is out of memory, once more after releasing the cache.
int fresh_block(Allocator &a, void **block, size_t size) {
  cudaError_t status = cudaMalloc(block, size);
  if (status == cudaErrorMemoryAllocation && a.stats.cached > 0) {
    cudaGetLastError();
    HERD_TRY(release_cached(a));
    status = cudaMalloc(block, size);
  }
  if (status != cudaSuccess) {
    *block = nullptr;
    return herd_cuda_fail(status, "cudaMalloc(%zu bytes)", size);
  }
  return HERD_OK;
}

int take_block(Allocator &a, void **block, size_t size) {
  auto bucket = a.free_blocks.find(size);
  if (bucket != a.free_blocks.end() && !bucket->second.empty()) {
    *block = bucket->second.back();
    bucket->second.pop_back();
    a.stats.cached -= size;
  } else {
    HERD_TRY(fresh_block(a, block, size));
  }
  try {
    a.live_blocks.emplace(*block, size);
  } catch (const std::bad_alloc &) {
    cudaFree(*block);  // never handed out, so no queued work can use it
    *block = nullptr;
    return herd_seterr(HERD_ENOMEM, "herd_cuda_malloc(%zu bytes): out of host memory", size);
  }
  a.stats.in_use += size;
  if (a.stats.in_use > a.stats.peak) a.stats.peak = a.stats.in_use;
  return HERD_OK;
}

}  // namespace

extern "C" int herd_cuda_malloc(void **ptr, size_t bytes) {
  if (!ptr) return herd_seterr(HERD_EINVAL, "herd_cuda_malloc: NULL result pointer");
  *ptr = nullptr;
  if (bytes == 0) return HERD_OK;
  if (bytes > largest_request)
    return herd_seterr(HERD_ENOMEM, "cudaMalloc(%zu bytes): larger than any device", bytes);
  Allocator &a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  return take_block(a, ptr, bucket_size(bytes));
}

extern "C" int herd_cuda_free(void *ptr) {
  if (!ptr) return HERD_OK;
  Allocator &a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  auto live = a.live_blocks.find(ptr);
  if (live == a.live_blocks.end())
    return herd_seterr(HERD_EINVAL, "herd_cuda_free(%p): not a block of herd_cuda_malloc", ptr);
  size_t size = live->second;
  a.live_blocks.erase(live);
  a.stats.in_use -= size;
  try {
    a.free_blocks[size].push_back(ptr);
    a.stats.cached += size;
  } catch (const std::bad_alloc &) {
    // No room to remember it: give it back to CUDA (after the work that may still use it).
    HERD_CUDA_CHECK(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before cudaFree)");
    HERD_CUDA_CHECK(cudaFree(ptr), "cudaFree(%zu bytes)", size);
  }
  return HERD_OK;
}

extern "C" int herd_cuda_empty_cache(void) {
  Allocator &a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  return release_cached(a);
}

extern "C" void herd_cuda_get_memory_stats(herd_cuda_memory_stats *stats) {
  Allocator &a = allocator();
  std::lock_guard<std::mutex> lock(a.mutex);
  *stats = a.stats;
}

// ---------------------------------------------------------------- copies

// Both directions synchronise: host memory may be pageable, and the caller may reuse `src` (to
// the device) or read `dst` (to the host) as soon as the call returns.
extern "C" int herd_cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  HERD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(host to device, %zu bytes)", bytes);
  HERD_CUDA_CHECK(cudaStreamSynchronize(stream),
                  "cudaStreamSynchronize (copy of %zu bytes to the device)", bytes);
  return HERD_OK;
}

extern "C" int herd_cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  HERD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync(device to host, %zu bytes)", bytes);
  HERD_CUDA_CHECK(cudaStreamSynchronize(stream),
                  "cudaStreamSynchronize (copy of %zu bytes to the host)", bytes);
  return HERD_OK;
}

extern "C" int herd_cuda_zero(void *ptr, size_t bytes) {
  if (bytes == 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  HERD_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream), "cudaMemsetAsync(%zu bytes)", bytes);
  return HERD_OK;
}

extern "C" int herd_cuda_copy_on_device(void *dst, const void *src, size_t bytes) {
  if (bytes == 0) return HERD_OK;
  cudaStream_t stream;
  HERD_TRY(herd_cuda_stream(&stream));
  HERD_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream),
                  "cudaMemcpyAsync(device to device, %zu bytes)", bytes);
  return herd_cuda_launched("cudaMemcpyAsync(device to device)");
}
