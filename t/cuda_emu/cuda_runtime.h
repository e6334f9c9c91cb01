// The part of the CUDA runtime and device language that kernels/attention.cu uses, emulated on
// the host for t/cuda_emu/run (see emu.cpp). Not a general CUDA emulator: no streams, no
// asynchrony, 1-D blocks, float/int shuffles, shared memory as host memory.
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
#define __shared__ static  // blocks run one at a time, so a static is the block's own

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

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
typedef struct CUstream_st *cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline const char *cudaGetErrorString(cudaError_t) {
  return "emulated error";
}
inline const char *cudaGetErrorName(cudaError_t) {
  return "cudaErrorEmulated";
}
inline cudaError_t cudaGetLastError() {
  return cudaSuccess;
}

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

[[noreturn]] void emu_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
void __syncthreads();
void emu_warp_sync();  // waits for the 32 lanes of the calling thread's warp
void emu_run_block(unsigned threads, void (*body)(void *), void *context);

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
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  std::memcpy(&emu_warp_words[warp][lane], &value, sizeof value);
  emu_warp_sync();
  T other;
  std::memcpy(&other, &emu_warp_words[warp][lane ^ (unsigned)offset], sizeof other);
  emu_warp_sync();  // every lane has read before the next shuffle writes
  return other;
}

inline int atomicOr(int *address, int value) {  // one host thread: plain is atomic
  const int old = *address;
  *address = old | value;
  return old;
}

template <class... P>
struct EmuCall {
  void (*kernel)(P...);
  std::tuple<P...> args;
  static void run(void *self) {
    EmuCall *call = static_cast<EmuCall *>(self);
    std::apply(call->kernel, call->args);
  }
};

// kernel<<<grid, block, smem, stream>>>(args...): the blocks one after the other, each with
// fresh dynamic shared memory of exactly `smem` bytes filled with 0xff (NaN as floats, -1 as
// ints), so a read of a word no thread wrote shows, and AddressSanitizer sees overruns.
template <class... P, class... A>
void emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, A... args) {
  const size_t limit = emu_smem_limit((const void *)kernel);
  if (smem > limit) emu_fail("launch with %zu bytes of shared memory; %zu allowed", smem, limit);
  if (block.y != 1 || block.z != 1 || block.x == 0 || block.x > 1024 || block.x % 32)
    emu_fail("block (%u,%u,%u) is not emulated", block.x, block.y, block.z);
  if (grid.y > 65535 || grid.z > 65535) emu_fail("grid (%u,%u,%u)", grid.x, grid.y, grid.z);
  EmuCall<P...> call{kernel, std::tuple<P...>(args...)};
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        blockIdx = {x, y, z};
        void *memory = std::malloc(smem ? smem : 1);
        if (!memory) emu_fail("out of host memory");
        std::memset(memory, 0xff, smem ? smem : 1);
        emu_dynamic_smem = memory;
        emu_run_block(block.x, &EmuCall<P...>::run, &call);
        std::free(memory);
      }
}

#endif
