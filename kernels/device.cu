// CUDA device discovery. The op kernels of the CUDA backend live beside this file.
#include <cuda_runtime.h>

#include "device.h"

extern "C" int herd_cuda_device_count(void) {
  int count = 0;
  // No driver or no GPU is not an error for herd: the CPU backend runs instead.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

extern "C" int herd_cuda_runtime_version(void) {
  return CUDART_VERSION;
}
