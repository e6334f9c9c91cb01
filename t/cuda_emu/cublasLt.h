// The cuBLASLt types kernels/cuda_internal.h names, for t/cuda_emu/run (no cuBLASLt calls).
#ifndef HERD_T_CUDA_EMU_CUBLASLT_H
#define HERD_T_CUDA_EMU_CUBLASLT_H

typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_ALLOC_FAILED = 3, CUBLAS_STATUS_INVALID_VALUE = 7 };
typedef struct cublasLtContext *cublasLtHandle_t;

#endif
