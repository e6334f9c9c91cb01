// defines: HERD_TRY, HERD_CUDA_CHECK, HERD_CUBLAS_CHECK, herd_cuda_fail, herd_cublas_fail,
//          herd_cuda_stream, herd_cuda_launched, herd_cublaslt, DeviceBuffer
//
// Shared by the .cu files of kernels/ (C++ only, not installed): turning CUDA and cuBLAS(Lt)
// statuses into herd errors, the process's stream, the cuBLASLt handle and scratch memory.
#ifndef HERD_KERNELS_CUDA_INTERNAL_H
#define HERD_KERNELS_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda.h"

// The runtime's headers are C without extern "C" guards of their own.
extern "C" {
#include "error.h"
#include "model.h"
#include "tensor.h"
}

// Returns from the calling function when `expr` (an int status) is not HERD_OK.
#define HERD_TRY(expr)             \
  do {                             \
    int herd_try_rc_ = (expr);     \
    if (herd_try_rc_ != HERD_OK) { \
      return herd_try_rc_;         \
    }                              \
  } while (0)

// Returns a herd error from the calling function when the CUDA call `status_expr` failed; the
// rest of the arguments (printf style) describe the call, e.g. "cudaMalloc(%zu bytes)", n.
#define HERD_CUDA_CHECK(status_expr, ...)                    \
  do {                                                       \
    cudaError_t herd_cuda_status_ = (status_expr);           \
    if (herd_cuda_status_ != cudaSuccess) {                  \
      return herd_cuda_fail(herd_cuda_status_, __VA_ARGS__); \
    }                                                        \
  } while (0)

#define HERD_CUBLAS_CHECK(status_expr, ...)                      \
  do {                                                           \
    cublasStatus_t herd_cublas_status_ = (status_expr);          \
    if (herd_cublas_status_ != CUBLAS_STATUS_SUCCESS) {          \
      return herd_cublas_fail(herd_cublas_status_, __VA_ARGS__); \
    }                                                            \
  } while (0)

// Records "<call>: <CUDA's description> (<status name>)" and returns the herd code for it:
// HERD_ENOMEM for an allocation failure, HERD_EINVAL for an invalid value, else HERD_EDEVICE.
// Clears CUDA's last-error slot (errors that are not sticky do not leak into later checks).
int herd_cuda_fail(cudaError_t status, const char *call_format, ...)
    __attribute__((format(printf, 2, 3)));
// The same for cuBLAS and cuBLASLt statuses ("<call>: <status name> (<description>)").
int herd_cublas_fail(cublasStatus_t status, const char *call_format, ...)
    __attribute__((format(printf, 2, 3)));

// The stream all herd work goes to (created on first use, on the then current device).
int herd_cuda_stream(cudaStream_t *stream);

// To call right after a kernel launch (or a library call that launches kernels): reports a
// launch failure naming `kernel`, and with HERD_CUDA_SYNC=1 waits for the kernel and reports
// its failure too.
int herd_cuda_launched(const char *kernel);

// The process's cuBLASLt handle and its workspace (created on first use).
int herd_cublaslt(cublasLtHandle_t *handle, void **workspace, size_t *workspace_bytes);

// Device memory for the duration of one op. Freeing it while kernels that use it are still
// queued is safe: the block can only be handed out to work queued after them on herd's stream.
template <typename T>
struct DeviceBuffer {
  T *ptr = nullptr;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() { herd_cuda_free(ptr); }
  int allocate(size_t count) {
    void *block = nullptr;
    int rc = herd_cuda_malloc(&block, (count > 0 ? count : 1) * sizeof(T));
    ptr = static_cast<T *>(block);
    return rc;
  }
};

#endif
