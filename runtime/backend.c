// Backends by name, for the places a user names a device (herd.model.new{device = "cuda"}).
#include <string.h>

#include "backend.h"
#include "config.h"
#include "error.h"

#ifdef HERD_HAVE_CUDA
#include "../kernels/backend_cuda.h"
#include "../kernels/device.h"
#endif

int herd_backend_find(const char *name, const herd_backend **out) {
  *out = NULL;
  if (!name) return herd_seterr(HERD_EINVAL, "device: no name (use \"cpu\" or \"cuda\")");
  if (!strcmp(name, "cpu")) {
    *out = &herd_cpu_backend;
    return HERD_OK;
  }
  if (strcmp(name, "cuda") != 0)
    return herd_seterr(HERD_EINVAL, "device '%s': unknown (use \"cpu\" or \"cuda\")", name);
#ifdef HERD_HAVE_CUDA
  if (herd_cuda_device_count() < 1)
    return herd_seterr(HERD_EDEVICE,
                       "device 'cuda': no CUDA device is visible (none present, "
                       "CUDA_VISIBLE_DEVICES hides them, or the driver is older than CUDA %d.%d "
                       "that herd was built with)",
                       herd_cuda_runtime_version() / 1000, herd_cuda_runtime_version() % 1000 / 10);
  *out = herd_cuda_backend();
  return HERD_OK;
#else
  return herd_seterr(HERD_EDEVICE,
                     "device 'cuda': this herd was built without CUDA (./configure --enable-cuda "
                     "with nvcc installed)");
#endif
}
