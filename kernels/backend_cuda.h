// defines: herd_cuda_backend
//
// The GPU's kernel table for the model (runtime/backend.h); only in CUDA builds
// (HERD_HAVE_CUDA in config.h).
#ifndef HERD_KERNELS_BACKEND_CUDA_H
#define HERD_KERNELS_BACKEND_CUDA_H

#include "backend.h"

const herd_backend *herd_cuda_backend(void);

#endif
