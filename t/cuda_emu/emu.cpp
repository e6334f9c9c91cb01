// A host emulation of CUDA thread blocks, for checking kernels/attention.cu without a GPU
// (t/cuda_emu/run): each thread of a block is a ucontext fiber on one host thread. A fiber runs
// until it reaches __syncthreads (or a shuffle's warp barrier) or ends; once every live thread
// of the block (of the warp) waits there, they all go on. Between barriers the threads run one
// after the other, in thread order or, with EMU_ORDER=reverse or EMU_ORDER=shuffle, in reverse
// or in a new pseudo-random order at every barrier: a kernel that reads shared memory another
// thread writes without a barrier in between gives different results in different orders.
//
// Also here: herd's CUDA runtime (cuda.h, cuda_internal.h) over host memory, so that the test
// programs link unchanged. Device memory is malloc'd and filled with 0xff bytes (NaN floats).
#include <ucontext.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "cuda_runtime.h"

extern "C" {
#include "error.h"
}

uint3 threadIdx, blockIdx;
dim3 gridDim, blockDim;
void *emu_dynamic_smem;
EmuWord emu_warp_words[32][32];

void emu_fail(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "cuda_emu: ");
  vfprintf(stderr, format, args);
  fprintf(stderr, " (block %u,%u,%u, thread %u)\n", blockIdx.x, blockIdx.y, blockIdx.z,
          threadIdx.x);
  va_end(args);
  abort();
}

static std::map<const void *, size_t> smem_limits;

void emu_set_smem_limit(const void *kernel, size_t bytes) {
  smem_limits[kernel] = bytes;
}

size_t emu_smem_limit(const void *kernel) {
  auto found = smem_limits.find(kernel);
  return found == smem_limits.end() ? EMU_DEFAULT_SMEM : found->second;
}

// ---------------------------------------------------------------- fibers

enum State { RUNNABLE, AT_SYNCTHREADS, AT_WARP_SYNC, DONE };

struct Fiber {
  ucontext_t context;
  State state;
};

static const size_t STACK_BYTES = 256 * 1024;
static std::vector<Fiber> fibers;
static std::vector<char *> stacks;
static ucontext_t scheduler;
static unsigned running;
static void (*block_body)(void *);
static void *block_context;

static void fiber_main() {
  block_body(block_context);
  fibers[running].state = DONE;
}  // returns to uc_link: the scheduler

static void wait_at(State state) {
  fibers[running].state = state;
  swapcontext(&fibers[running].context, &scheduler);
}

void __syncthreads() {
  wait_at(AT_SYNCTHREADS);
}

void emu_warp_sync() {
  wait_at(AT_WARP_SYNC);
}

// 0: thread order, 1: reverse, 2: a new pseudo-random order at every barrier.
static int schedule_order() {
  static const int order = [] {
    const char *env = getenv("EMU_ORDER");
    if (!env || !*env || !strcmp(env, "forward")) return 0;
    if (!strcmp(env, "reverse")) return 1;
    if (!strcmp(env, "shuffle")) return 2;
    fprintf(stderr, "cuda_emu: EMU_ORDER=%s is not forward, reverse or shuffle\n", env);
    abort();
  }();
  return order;
}

void emu_run_block(unsigned n, void (*body)(void *), void *context) {
  static unsigned long long random_state = 88172645463325252ull;
  block_body = body, block_context = context;
  fibers.assign(n, Fiber{});
  while (stacks.size() < n) {
    stacks.push_back(static_cast<char *>(malloc(STACK_BYTES)));
    if (!stacks.back()) emu_fail("out of host memory");
  }
  for (unsigned i = 0; i < n; i++) {
    getcontext(&fibers[i].context);
    fibers[i].context.uc_stack.ss_sp = stacks[i];
    fibers[i].context.uc_stack.ss_size = STACK_BYTES;
    fibers[i].context.uc_link = &scheduler;
    makecontext(&fibers[i].context, fiber_main, 0);
    fibers[i].state = RUNNABLE;
  }
  std::vector<unsigned> order(n);
  for (;;) {
    for (unsigned i = 0; i < n; i++) order[i] = schedule_order() == 1 ? n - 1 - i : i;
    if (schedule_order() == 2)
      for (unsigned i = n - 1; i > 0; i--) {
        random_state ^= random_state << 13, random_state ^= random_state >> 7;
        random_state ^= random_state << 17;
        std::swap(order[i], order[random_state % (i + 1)]);
      }
    for (unsigned k = 0; k < n; k++) {
      const unsigned i = order[k];
      if (fibers[i].state != RUNNABLE) continue;
      running = i;
      threadIdx = {i, 0, 0};
      swapcontext(&scheduler, &fibers[i].context);
    }
    unsigned done = 0, at_syncthreads = 0;
    for (const Fiber &f : fibers)
      done += f.state == DONE, at_syncthreads += f.state == AT_SYNCTHREADS;
    if (done == n) return;
    if (at_syncthreads == n - done) {  // every live thread is at __syncthreads
      for (Fiber &f : fibers)
        if (f.state == AT_SYNCTHREADS) f.state = RUNNABLE;
      continue;
    }
    bool released = false;
    for (unsigned w = 0; w * 32 < n; w++) {
      unsigned live = 0, waiting = 0;
      for (unsigned lane = w * 32; lane < w * 32 + 32; lane++)
        live += fibers[lane].state != DONE, waiting += fibers[lane].state == AT_WARP_SYNC;
      if (live == 0 || waiting != live) continue;
      if (live != 32) emu_fail("a shuffle in warp %u with %u of its lanes", w, live);
      for (unsigned lane = w * 32; lane < w * 32 + 32; lane++) fibers[lane].state = RUNNABLE;
      released = true;
    }
    if (!released)
      emu_fail(
          "deadlock: %u threads at __syncthreads, %u done, the rest at a shuffle of a warp "
          "whose other lanes are elsewhere",
          at_syncthreads, done);
  }
}

// ---------------------------------------------------------------- herd's CUDA runtime

extern "C" {

int herd_cuda_device_count(void) {
  return 1;
}

int herd_cuda_runtime_version(void) {
  return 0;
}

int herd_cuda_malloc(void **ptr, size_t bytes) {
  *ptr = nullptr;
  if (bytes == 0) return HERD_OK;
  *ptr = malloc(bytes);
  if (!*ptr)
    return herd_seterr(HERD_ENOMEM, "emulated cudaMalloc(%zu bytes): out of memory", bytes);
  memset(*ptr, 0xff, bytes);
  return HERD_OK;
}

int herd_cuda_free(void *ptr) {
  free(ptr);
  return HERD_OK;
}

int herd_cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
  memcpy(dst, src, bytes);
  return HERD_OK;
}

int herd_cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
  memcpy(dst, src, bytes);
  return HERD_OK;
}

int herd_cuda_copy_on_device(void *dst, const void *src, size_t bytes) {
  memmove(dst, src, bytes);
  return HERD_OK;
}

int herd_cuda_synchronize(void) {
  return HERD_OK;
}

}  // extern "C"

int herd_cuda_stream(cudaStream_t *stream) {
  *stream = nullptr;
  return HERD_OK;
}

int herd_cuda_launched(const char *) {
  return HERD_OK;
}  // kernels ran in emu_launch

int herd_cuda_fail(cudaError_t status, const char *call_format, ...) {
  char call[512];
  va_list args;
  va_start(args, call_format);
  vsnprintf(call, sizeof call, call_format, args);
  va_end(args);
  return herd_seterr(status == cudaErrorMemoryAllocation ? HERD_ENOMEM : HERD_EINVAL,
                     "%s: emulated CUDA error %d", call, status);
}
