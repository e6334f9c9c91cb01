// defines: herd_cuda_memory_stats, herd_cuda_malloc, herd_cuda_free, herd_cuda_empty_cache,
//          herd_cuda_get_memory_stats, herd_cuda_copy_to_device, herd_cuda_copy_to_host,
//          herd_cuda_zero, herd_cuda_copy_on_device, herd_cuda_synchronize
//          (and, from device.h: herd_cuda_device_count, herd_cuda_runtime_version)
//
// The CUDA runtime of herd, usable from C: device memory through a caching allocator, copies,
// and synchronisation. Every function returns an int status (0, or a negative HERD_E* code with
// a message in herd_errmsg() naming the CUDA call and its status, e.g.
// "cudaMalloc(268435456 bytes): out of memory (cudaErrorMemoryAllocation)").
//
// All herd work on the GPU (kernels, cuBLASLt, copies) runs in order on one stream per process,
// created on first use on the current device. Kernels are asynchronous: an op returns once its
// kernels are queued, and a failure inside a kernel shows up at the next synchronising call
// (herd_cuda_synchronize, a copy to the host, an op that reads a result back). With the
// environment variable HERD_CUDA_SYNC=1 every op synchronises after each kernel, so such a
// failure is reported by the op that caused it, with the kernel's name (for debugging).
#ifndef HERD_KERNELS_CUDA_H
#define HERD_KERNELS_CUDA_H

#include <stddef.h>

#include "device.h"

#ifdef __cplusplus
extern "C" {
#endif

// Device memory held by the caching allocator, in bytes.
typedef struct herd_cuda_memory_stats {
  size_t in_use;  // handed out by herd_cuda_malloc and not yet freed (rounded to the bucket size)
  size_t cached;  // freed blocks kept for reuse (released by herd_cuda_empty_cache)
  size_t peak;    // the largest in_use seen by this process
} herd_cuda_memory_stats;

// *ptr = device memory of at least `bytes` (256-byte aligned, not zeroed); bytes = 0 gives NULL.
// Sizes are rounded up to a bucket (a power of two up to 1 MiB, then 8 sizes per power of two)
// and a freed block of the same bucket is reused. When cudaMalloc fails the cache is emptied and
// cudaMalloc tried once more: HERD_ENOMEM naming cudaMalloc and the size when that fails too.
int herd_cuda_malloc(void **ptr, size_t bytes);
// Returns a block to the cache (NULL is fine). Safe while queued kernels still use it: a later
// herd_cuda_malloc hands it out to work queued after them on the same stream. HERD_EINVAL for a
// pointer herd_cuda_malloc did not return.
int herd_cuda_free(void *ptr);
// Waits for the device, then gives every cached block back to CUDA (cudaFree).
int herd_cuda_empty_cache(void);
void herd_cuda_get_memory_stats(herd_cuda_memory_stats *stats);

// Copies between host and device memory. The copy to the device returns once `src` may be
// reused; the copy to the host once `dst` holds the data (both wait for queued work first).
int herd_cuda_copy_to_device(void *dst, const void *src, size_t bytes);
int herd_cuda_copy_to_host(void *dst, const void *src, size_t bytes);
// Sets `bytes` of device memory to zero, queued on the stream (asynchronous).
int herd_cuda_zero(void *ptr, size_t bytes);
// Device to device, queued on the stream (asynchronous).
int herd_cuda_copy_on_device(void *dst, const void *src, size_t bytes);

// Waits for all queued work; HERD_EDEVICE naming the failure when a kernel failed.
int herd_cuda_synchronize(void);

#ifdef __cplusplus
}
#endif
#endif
