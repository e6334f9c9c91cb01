// defines: herd_cuda_device_count, herd_cuda_runtime_version
#ifndef HERD_KERNELS_DEVICE_H
#define HERD_KERNELS_DEVICE_H
#ifdef __cplusplus
extern "C" {
#endif

// Number of CUDA devices this process can use; 0 when there is no GPU or no driver.
int herd_cuda_device_count(void);
// The CUDA runtime version herd was built against, as major*1000 + minor*10.
int herd_cuda_runtime_version(void);

#ifdef __cplusplus
}
#endif
#endif
