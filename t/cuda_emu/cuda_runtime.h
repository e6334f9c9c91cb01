// The part of the CUDA runtime API and device language that kernels/*.cu use, emulated on the
// host for t/cuda_emu/run (see emu.cpp). Not a general CUDA emulator: one device, one stream
// that runs everything at once (a kernel has finished when its launch returns), 32-bit and
// 64-bit shuffles of full warps, shared memory as host memory.
#ifndef HERD_T_CUDA_EMU_CUDA_RUNTIME_H
#define HERD_T_CUDA_EMU_CUDA_RUNTIME_H

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// prep.py turns `__shared__ T name[N];` into a static (blocks run one at a time, so a static is
// the block's own) registered with emu_shared, which fills it with 0xff bytes now and before
// every later block: a read of a word no thread of the block wrote shows as NaN or -1.
bool emu_shared(void *array, size_t bytes);
void emu_reset_shared();

// The version herd's headers report (herd_cuda_runtime_version): the emulation's, not a real one.
#define CUDART_VERSION 12000

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern uint3 threadIdx, blockIdx;
extern dim3 gridDim, blockDim;
extern void *emu_dynamic_smem;  // the running block's dynamic shared memory

// ---------------------------------------------------------------- runtime API (emu.cpp)

// The real codes, so messages name what a GPU would report.
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorIllegalAddress = 700,
};
typedef enum cudaError cudaError_t;
typedef struct CUstream_st *cudaStream_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum { cudaStreamDefault = 0, cudaStreamNonBlocking = 1 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);
// Launch errors and failed calls are returned once (and cleared). The error of a kernel that
// faulted is sticky, as on a GPU, and shows from the next synchronising call on (stream or device
// synchronisation, cudaMemcpy, cudaFree); until then the kernel is as good as still running, and
// the work queued after it is skipped.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int *count);
// Device memory is host memory, 256-byte aligned and filled with 0xff bytes (NaN as floats, -1
// as ints) so that a read of memory nobody wrote shows, followed by a guard page and
// inaccessible outside device work (EmuDeviceAccess). More than EMU_DEVICE_BYTES in all is
// cudaErrorMemoryAllocation.
constexpr size_t EMU_DEVICE_BYTES = (size_t)16 << 30;
cudaError_t cudaMalloc(void **ptr, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T **ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void **>(ptr), bytes);
}
cudaError_t cudaFree(void *ptr);
// Copies check that their device side lies inside one live cudaMalloc block.
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();

// For the emulated libraries (cublasLt.h, cub/): whether [ptr, ptr + bytes) lies inside one live
// block of cudaMalloc; whether work queued now must be skipped because a kernel faulted, with
// *error the error to return (cudaSuccess until a synchronising call has reported the fault).
bool emu_is_device_range(const void *ptr, size_t bytes);
bool emu_skip_async_work(cudaError_t *error);
// Device memory is readable and writable while one of these lives (kernels, copies, the
// emulated libraries); host code touching it at other times crashes, as on a GPU machine.
struct EmuDeviceAccess {
  EmuDeviceAccess();
  ~EmuDeviceAccess();
  EmuDeviceAccess(const EmuDeviceAccess &) = delete;
  EmuDeviceAccess &operator=(const EmuDeviceAccess &) = delete;
};

// The largest dynamic shared memory a block may take: 48 KiB unless raised, up to the 99 KiB
// of sm_86/sm_89 (the smallest opt-in limit herd supports).
constexpr size_t EMU_DEFAULT_SMEM = 48 * 1024, EMU_MAX_SMEM = 101376;
void emu_set_smem_limit(const void *kernel, size_t bytes);
size_t emu_smem_limit(const void *kernel);
template <class T>
cudaError_t cudaFuncSetAttribute(T *kernel, cudaFuncAttribute, int value) {
  if (value < 0 || (size_t)value > EMU_MAX_SMEM) return cudaErrorInvalidValue;
  emu_set_smem_limit((const void *)kernel, (size_t)value);
  return cudaSuccess;
}

// ---------------------------------------------------------------- device functions

[[noreturn]] void emu_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
// Threads waiting at different __syncthreads (by source line) fail the emulation: a barrier in
// divergent code is undefined on a GPU.
void emu_syncthreads(const char *file, int line);
#define __syncthreads() emu_syncthreads(__FILE__, __LINE__)
void emu_warp_sync();          // waits for the 32 lanes of the calling thread's warp
unsigned emu_linear_thread();  // x + y * blockDim.x + z * blockDim.x * blockDim.y
// Runs the block's `threads` fibers to the end; false when one of them faulted (the kernel then
// stops, as a GPU kernel does at an illegal address).
bool emu_run_block(unsigned threads, void (*body)(void *), void *context);
// Called by emu_launch: whether a launch may run (no sticky error; a launch error otherwise).
bool emu_launch_allowed(dim3 grid, dim3 block, size_t smem, const void *kernel);
void emu_kernel_faulted();  // after a block faulted: the sticky error of the device

union EmuWord {
  float f;
  double d;
  int i;
  unsigned u;
  long long ll;
};
extern EmuWord emu_warp_words[32][32];  // [warp][lane]

template <class T>
T __shfl_xor_sync(unsigned mask, T value, int offset, int width = 32) {
  static_assert(sizeof(T) <= sizeof(EmuWord), "shuffle of a type wider than 8 bytes");
  if (mask != 0xffffffffu) emu_fail("shuffle with mask %#x (only full warps are emulated)", mask);
  if (offset <= 0 || offset >= width || width > 32 || (width & (width - 1)))
    emu_fail("shuffle offset %d, width %d", offset, width);
  const unsigned lane = emu_linear_thread() % 32, warp = emu_linear_thread() / 32;
  std::memcpy(&emu_warp_words[warp][lane], &value, sizeof value);
  emu_warp_sync();
  T other;
  std::memcpy(&other, &emu_warp_words[warp][lane ^ (unsigned)offset], sizeof other);
  emu_warp_sync();  // every lane has read before the next shuffle writes
  return other;
}

// Atomics: the fibers share one host thread and switch only at barriers, so plain is atomic.
inline int atomicOr(int *address, int value) {
  const int old = *address;
  *address = old | value;
  return old;
}
inline int atomicMin(int *address, int value) {
  const int old = *address;
  *address = value < old ? value : old;
  return old;
}
inline int atomicAdd(int *address, int value) {
  const int old = *address;
  *address = old + value;
  return old;
}

inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
// Rounded operations that the compiler must not fuse into a multiply-add. t/cuda_emu/run builds
// with -ffp-contract=off, so no operation is fused: the emulation cannot show what nvcc's fused
// multiply-adds change elsewhere.
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}

// ---------------------------------------------------------------- launches

template <class... P>
struct EmuCall {
  void (*kernel)(P...);
  std::tuple<P...> args;
  static void run(void *self) {
    EmuCall *call = static_cast<EmuCall *>(self);
    std::apply(call->kernel, call->args);
  }
};

// A launch of a kernel template whose arguments deduce its parameters (prep.py writes
// `k<<<...>>>(args)` for such a k as emu_launch_deduced([](auto... a) { k(a...); }, ...)).
template <class F, class... A>
struct EmuDeducedCall {
  F call;
  std::tuple<A...> args;
  static void run(void *self) {
    EmuDeducedCall *c = static_cast<EmuDeducedCall *>(self);
    std::apply(c->call, c->args);
  }
};

// The blocks one after the other (in the order EMU_ORDER says: x fastest, or reversed, or
// shuffled), each with fresh dynamic shared memory of exactly `smem` bytes filled with 0xff, so
// a read of a word no thread wrote shows, and AddressSanitizer sees overruns (the static shared
// arrays are refilled likewise). Stops at a block that faulted.
void emu_run_grid(dim3 grid, dim3 block, size_t smem, void (*run)(void *), void *call);

// kernel<<<grid, block, smem, stream>>>(args...): the arguments are converted to the kernel's
// parameter types once, as at a launch.
template <class... P, class... A>
void emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, A... args) {
  if (!emu_launch_allowed(grid, block, smem, (const void *)kernel)) return;
  EmuCall<P...> call{kernel, std::tuple<P...>(args...)};
  emu_run_grid(grid, block, smem, &EmuCall<P...>::run, &call);
}

template <class F, class... A>
void emu_launch_deduced(F call, dim3 grid, dim3 block, size_t smem, cudaStream_t, A... args) {
  // a kernel template has no address before its arguments are known: the default smem limit
  if (!emu_launch_allowed(grid, block, smem, nullptr)) return;
  EmuDeducedCall<F, A...> c{call, std::tuple<A...>(args...)};
  emu_run_grid(grid, block, smem, &EmuDeducedCall<F, A...>::run, &c);
}

#endif
