// A host emulation of CUDA, for checking kernels/*.cu without a GPU (t/cuda_emu/run).
//
// Thread blocks: each thread of a block is a fiber on one host thread. A fiber runs until it
// reaches __syncthreads (or a shuffle's warp barrier) or ends; once every live thread of the
// block (of the warp) waits there, they all go on. The next fiber to run is the lowest runnable
// thread or, with EMU_ORDER=reverse or EMU_ORDER=shuffle, the highest or a pseudo-random one, so
// warps run ahead of each other up to a __syncthreads as on a GPU: a kernel that reads shared
// memory another thread writes without a barrier in between gives different results in
// different orders.
//
// The runtime API (cuda_runtime.h): device memory is host memory, every call runs at once on
// the one stream. Device memory is inaccessible outside device work, so that host code touching
// it crashes as on a GPU machine, and each block ends at a guard page. A kernel thread that
// touches unmapped memory (SIGSEGV) ends its kernel and leaves the cudaErrorIllegalAddress that a
// GPU reports from the next synchronising call on. With EMU_SANITIZE=1, AddressSanitizer also
// sees overruns of shared memory and stops the test.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <execinfo.h>

#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

uint3 threadIdx, blockIdx;
dim3 gridDim, blockDim;
void *emu_dynamic_smem;
EmuWord emu_warp_words[32][32];

void emu_fail(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fprintf(stderr, "cuda_emu: ");
  vfprintf(stderr, format, args);
  fprintf(stderr, " (block %u,%u,%u, thread %u,%u,%u)\n", blockIdx.x, blockIdx.y, blockIdx.z,
          threadIdx.x, threadIdx.y, threadIdx.z);
  va_end(args);
  abort();
}

// ---------------------------------------------------------------- device memory

// A cudaMalloc block: its own mapping, the block (rounded to 256 bytes) at the end of the mapping's
// pages and an inaccessible guard page after them, so that a kernel running past the end faults
// (cudaErrorIllegalAddress) as it would on a GPU. Outside device work (kernels, copies, the
// emulated libraries) every block is inaccessible too: host code that reads or writes device
// memory, which crashes on a GPU machine, crashes here, named by on_fault.
struct DeviceBlock {
  char *mapping;
  size_t mapping_bytes;  // the pages holding the block, without the guard page
  size_t bytes;          // as asked for
};
static std::map<const char *, DeviceBlock> blocks;  // live blocks by start
static size_t page_bytes;
static int device_open;  // the depth of EmuDeviceAccess scopes

static void protect(const DeviceBlock &b, bool open) {
  if (mprotect(b.mapping, b.mapping_bytes, open ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
    emu_fail("mprotect of device memory failed");
}

EmuDeviceAccess::EmuDeviceAccess() {
  if (device_open++ == 0)
    for (auto &b : blocks) protect(b.second, true);
}

EmuDeviceAccess::~EmuDeviceAccess() {
  if (--device_open == 0)
    for (auto &b : blocks) protect(b.second, false);
}

// The live block holding [ptr, ptr + bytes), or blocks.end().
static std::map<const char *, DeviceBlock>::iterator block_of(const void *ptr, size_t bytes) {
  const char *p = static_cast<const char *>(ptr);
  auto it = blocks.upper_bound(p);
  if (it == blocks.begin()) return blocks.end();
  --it;
  const size_t size = it->second.bytes;
  if (p < it->first || (size_t)(p - it->first) > size || bytes > size - (size_t)(p - it->first))
    return blocks.end();
  return it;
}

// "in a device block ..." or "past the end of ..." for an address in a block's mapping or guard.
static bool describe_device_address(uintptr_t address, char *out, size_t size) {
  for (auto &b : blocks) {
    const uintptr_t start = (uintptr_t)b.second.mapping,
                    end = start + b.second.mapping_bytes + page_bytes, at = (uintptr_t)b.first;
    if (address < start || address >= end) continue;
    if (address >= at && address < at + b.second.bytes)
      snprintf(out, size, "byte %zu of the %zu-byte device block at %p", (size_t)(address - at),
               b.second.bytes, (const void *)b.first);
    else
      snprintf(out, size, "%s the %zu-byte device block at %p (%+lld bytes from its end)",
               address < at ? "before" : "past the end of", b.second.bytes, (const void *)b.first,
               (long long)(address - (at + b.second.bytes)));
    return true;
  }
  return false;
}

static std::map<void *, size_t> static_shared;  // every static __shared__ array seen

bool emu_shared(void *array, size_t bytes) {
  static_shared[array] = bytes;
  memset(array, 0xff, bytes);
  return true;
}

void emu_reset_shared() {
  for (auto &array : static_shared) memset(array.first, 0xff, array.second);
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

// Stack switching: on x86-64 a few instructions that keep the callee-saved registers and the
// floating-point control words (ucontext's swapcontext makes a system call per switch, which
// dominated the run time); elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void emu_switch_stack(void **save_sp, void *load_sp);
asm(R"(
        .pushsection .text
        .globl emu_switch_stack
        .type emu_switch_stack, @function
emu_switch_stack:
        pushq %rbp
        pushq %rbx
        pushq %r12
        pushq %r13
        pushq %r14
        pushq %r15
        subq $8, %rsp
        stmxcsr (%rsp)
        fnstcw 4(%rsp)
        movq %rsp, (%rdi)
        movq %rsi, %rsp
        ldmxcsr (%rsp)
        fldcw 4(%rsp)
        addq $8, %rsp
        popq %r15
        popq %r14
        popq %r13
        popq %r12
        popq %rbx
        popq %rbp
        ret
        .size emu_switch_stack, .-emu_switch_stack
        .popsection
)");

struct Context {
  void *sp;
};

// A context that starts `entry` on the stack [stack, stack + bytes): the frame emu_switch_stack
// pops (control words, six registers, the return address = entry), above it a null return
// address for entry, which never returns.
static void make_context(Context *c, char *stack, size_t bytes, void (*entry)()) {
  uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
  uint64_t *sp = reinterpret_cast<uint64_t *>(top);
  *--sp = 0;                                          // entry's return address (never used)
  *--sp = (uint64_t)(uintptr_t)entry;                 // popped by ret
  for (int i = 0; i < 6; i++) *--sp = 0;              // rbp, rbx, r12-r15
  *--sp = (uint64_t)0x1f80 | (uint64_t)0x037f << 32;  // MXCSR and x87 control word defaults
  c->sp = sp;
}

static void switch_context(Context *from, Context *to) {
  emu_switch_stack(&from->sp, to->sp);
}
#else
#include <ucontext.h>
struct Context {
  ucontext_t uc;
};

static void make_context(Context *c, char *stack, size_t bytes, void (*entry)()) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = bytes;
  c->uc.uc_link = nullptr;  // entry never returns
  makecontext(&c->uc, entry, 0);
}

static void switch_context(Context *from, Context *to) {
  swapcontext(&from->uc, &to->uc);
}
#endif

enum State { RUNNABLE, AT_SYNCTHREADS, AT_WARP_SYNC, DONE };

struct Fiber {
  Context context;
  State state;
  void *fake_stack;          // AddressSanitizer's, while the fiber is switched out
  const char *barrier_file;  // where it called __syncthreads (AT_SYNCTHREADS)
  int barrier_line;
};

// Fiber stacks are mapped with an inaccessible page below them: an overflow faults (and is
// named) instead of overwriting the next stack.
static const size_t STACK_BYTES = 256 * 1024;
static size_t guard_bytes;
static std::vector<Fiber> fibers;
static std::vector<char *> stacks;  // the usable part, above the guard page
static Context scheduler;
// for AddressSanitizer: the scheduler's fake stack, and the stack the scheduler runs on
[[maybe_unused]] static void *scheduler_fake_stack;
[[maybe_unused]] static const void *main_stack_bottom;
[[maybe_unused]] static size_t main_stack_size;
static unsigned running;
static void (*block_body)(void *);
static void *block_context;
static sigjmp_buf fault_jump;
static volatile sig_atomic_t in_kernel;

// Leaves the running fiber for the scheduler (for good when the fiber is done).
static void to_scheduler() {
  Fiber &f = fibers[running];
#if EMU_ASAN
  __sanitizer_start_switch_fiber(f.state == DONE ? nullptr : &f.fake_stack, main_stack_bottom,
                                 main_stack_size);
#endif
  switch_context(&f.context, &scheduler);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

static void fiber_main() {
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &main_stack_bottom, &main_stack_size);
#endif
  block_body(block_context);
  fibers[running].state = DONE;
  to_scheduler();
  abort();  // a finished fiber is never resumed
}

static void run_fiber(unsigned i) {
  running = i;
  threadIdx = {i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y)};
#if EMU_ASAN
  __sanitizer_start_switch_fiber(&scheduler_fake_stack, stacks[i], STACK_BYTES);
#endif
  switch_context(&scheduler, &fibers[i].context);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(scheduler_fake_stack, nullptr, nullptr);
#endif
}

static void wait_at(State state) {
  fibers[running].state = state;
  to_scheduler();
}

void emu_syncthreads(const char *file, int line) {
  fibers[running].barrier_file = file, fibers[running].barrier_line = line;
  wait_at(AT_SYNCTHREADS);
}

void emu_warp_sync() {
  wait_at(AT_WARP_SYNC);
}

unsigned emu_linear_thread() {
  return running;
}

// Which runnable thread runs next: 0 the lowest, 1 the highest, 2 a pseudo-random one.
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

// ---------------------------------------------------------------- faults

// SIGSEGV/SIGBUS inside a kernel: the launch ends (fault_jump in emu_run_block). Runs on its own
// stack, so a fiber's stack overflow reaches it too. Elsewhere the signal kills the process as
// it would without the handler.
static void on_fault(int signal, siginfo_t *info, void *) {
  char message[512], where[200];
  const uintptr_t address = (uintptr_t)info->si_addr;
  for (char *stack : stacks)
    if (address < (uintptr_t)stack && address >= (uintptr_t)stack - guard_bytes) {
      snprintf(message, sizeof message,
               "cuda_emu: a fiber overflowed its %zu-byte stack (block %u,%u,%u, thread "
               "%u,%u,%u); raise STACK_BYTES in emu.cpp\n",
               STACK_BYTES, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
               threadIdx.z);
      if (write(2, message, strlen(message)) < 0) abort();
      abort();
    }
  const bool device = describe_device_address(address, where, sizeof where);
  if (!in_kernel) {
    if (device && !device_open) {
      snprintf(message, sizeof message,
               "cuda_emu: host code touched device memory at %p (%s): a crash on a GPU too\n",
               info->si_addr, where);
      if (write(2, message, strlen(message)) < 0) abort();
      void *frames[32];
      backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
    }
    ::signal(signal, SIG_DFL);  // returning re-runs the access, which now kills the process
    return;
  }
  snprintf(message, sizeof message,
           "cuda_emu: kernel thread (block %u,%u,%u, thread %u,%u,%u) faulted at address %p%s%s%s: "
           "the kernel stops, the device reports cudaErrorIllegalAddress\n",
           blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z, info->si_addr,
           device ? " (" : "", device ? where : "", device ? ")" : "");
  if (write(2, message, strlen(message)) < 0) abort();
#if EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, main_stack_bottom, main_stack_size);
#endif
  siglongjmp(fault_jump, 1);
}

static void install_fault_handler() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static char alternate[64 * 1024];
  stack_t stack = {};
  stack.ss_sp = alternate;
  stack.ss_size = sizeof alternate;
  if (sigaltstack(&stack, nullptr) != 0) emu_fail("sigaltstack failed");
  struct sigaction action = {};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;  // NODEFER: no mask to restore
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGSEGV, &action, nullptr) != 0 || sigaction(SIGBUS, &action, nullptr) != 0)
    emu_fail("sigaction failed");
}

// The runnable fibers of a block (at most 1024), and the choice of the next one to run.
class ReadySet {
 public:
  void clear() { memset(bits_, 0, sizeof bits_), count_ = 0; }
  bool empty() const { return count_ == 0; }
  void add(unsigned i) {
    if (!(bits_[i / 64] >> (i % 64) & 1)) bits_[i / 64] |= (uint64_t)1 << (i % 64), count_++;
  }
  // Takes out the lowest (order 0), the highest (1) or a pseudo-random (2) runnable fiber.
  unsigned take(int order) {
    unsigned word = 0, bit = 0;
    if (order == 0) {
      while (!bits_[word]) word++;
      bit = (unsigned)__builtin_ctzll(bits_[word]);
    } else if (order == 1) {
      word = WORDS - 1;
      while (!bits_[word]) word--;
      bit = 63 - (unsigned)__builtin_clzll(bits_[word]);
    } else {
      random_ ^= random_ << 13, random_ ^= random_ >> 7, random_ ^= random_ << 17;
      unsigned k = (unsigned)(random_ % count_);  // the k-th runnable fiber
      while ((unsigned)__builtin_popcountll(bits_[word]) <= k)
        k -= (unsigned)__builtin_popcountll(bits_[word++]);
      uint64_t w = bits_[word];
      for (; k > 0; k--) w &= w - 1;  // drop the lowest set bits
      bit = (unsigned)__builtin_ctzll(w);
    }
    bits_[word] &= ~((uint64_t)1 << bit), count_--;
    return word * 64 + bit;
  }

 private:
  static const unsigned WORDS = 1024 / 64;
  uint64_t bits_[WORDS];
  unsigned count_ = 0;
  unsigned long long random_ = 88172645463325252ull;
};

// Runs the block: one runnable fiber at a time until it waits or ends. A warp whose live lanes
// all wait at a shuffle goes on at once (warps are independent: one may run far ahead of the
// others up to a __syncthreads), and __syncthreads releases the block once every live thread
// waits there. Which runnable fiber runs next is the lowest, the highest or a random one
// (EMU_ORDER): the same kernel then sees very different interleavings of its warps.
bool emu_run_block(unsigned n, void (*body)(void *), void *context) {
  static ReadySet ready;  // static: unchanged by a jump back from a fault
  install_fault_handler();
  block_body = body, block_context = context;
  fibers.assign(n, Fiber{});
  if (!guard_bytes) guard_bytes = (size_t)sysconf(_SC_PAGESIZE);
  while (stacks.size() < n) {
    void *mapping = mmap(nullptr, guard_bytes + STACK_BYTES, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) emu_fail("out of host memory for fiber stacks");
    if (mprotect(mapping, guard_bytes, PROT_NONE) != 0) emu_fail("mprotect failed");
    stacks.push_back(static_cast<char *>(mapping) + guard_bytes);
  }
  ready.clear();
  for (unsigned i = 0; i < n; i++) {
    make_context(&fibers[i].context, stacks[i], STACK_BYTES, fiber_main);
    fibers[i].state = RUNNABLE;
    ready.add(i);
  }
  if (sigsetjmp(fault_jump, 0)) {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
    // the abandoned fibers' frames leave their stack poisoned
    for (unsigned i = 0; i < n; i++) __asan_unpoison_memory_region(stacks[i], STACK_BYTES);
#endif
    in_kernel = 0;
    return false;
  }
  in_kernel = 1;
  unsigned live = n, at_syncthreads = 0;
  // A warp goes on from a shuffle once its live lanes all wait there.
  auto release_warp = [n](unsigned warp) {
    const unsigned first = warp * 32, end = std::min(n, first + 32);
    unsigned lanes = 0, waiting = 0;
    for (unsigned lane = first; lane < end; lane++)
      lanes += fibers[lane].state != DONE, waiting += fibers[lane].state == AT_WARP_SYNC;
    if (waiting == 0 || waiting != lanes) return;
    if (lanes != 32) emu_fail("a shuffle in warp %u with %u of its lanes", warp, lanes);
    for (unsigned lane = first; lane < end; lane++) fibers[lane].state = RUNNABLE, ready.add(lane);
  };
  // The block goes on once every live thread waits at __syncthreads, the same one: threads at
  // different __syncthreads calls (a barrier in divergent code) are undefined on a GPU.
  auto release_block = [&]() {
    if (at_syncthreads == 0 || at_syncthreads != live) return;
    const Fiber *first = nullptr;
    for (unsigned i = 0; i < n; i++) {
      if (fibers[i].state != AT_SYNCTHREADS) continue;
      if (!first) first = &fibers[i];
      if (fibers[i].barrier_line != first->barrier_line ||
          strcmp(fibers[i].barrier_file, first->barrier_file) != 0)
        emu_fail("__syncthreads at different places: thread %u at %s:%d, thread %u at %s:%d",
                 (unsigned)(first - fibers.data()), first->barrier_file, first->barrier_line, i,
                 fibers[i].barrier_file, fibers[i].barrier_line);
      fibers[i].state = RUNNABLE, ready.add(i);
    }
    at_syncthreads = 0;
  };
  while (live > 0) {
    if (ready.empty())
      emu_fail(
          "deadlock: %u of %u threads at __syncthreads, the others at a shuffle of a warp whose "
          "other lanes are elsewhere",
          at_syncthreads, live);
    const unsigned i = ready.take(schedule_order());
    run_fiber(i);
    switch (fibers[i].state) {
      case AT_WARP_SYNC:
        release_warp(i / 32);
        break;
      case AT_SYNCTHREADS:
        at_syncthreads++;
        release_block();
        break;
      case DONE:
        live--;
        release_warp(i / 32);  // (a shuffle short of this lane fails there)
        release_block();
        break;
      case RUNNABLE:
        emu_fail("a fiber came back runnable");
    }
  }
  in_kernel = 0;
  return true;
}

void emu_run_grid(dim3 grid, dim3 block, size_t smem, void (*run)(void *), void *call) {
  static unsigned long long random_state = 0x9e3779b97f4a7c15ull;
  EmuDeviceAccess access;
  gridDim = grid;
  blockDim = block;
  const unsigned threads = block.x * block.y * block.z;
  const size_t count = (size_t)grid.x * grid.y * grid.z;
  std::vector<size_t> order(count);
  for (size_t i = 0; i < count; i++) order[i] = schedule_order() == 1 ? count - 1 - i : i;
  if (schedule_order() == 2)
    for (size_t i = count - 1; i > 0; i--) {
      random_state ^= random_state << 13, random_state ^= random_state >> 7;
      random_state ^= random_state << 17;
      std::swap(order[i], order[random_state % (i + 1)]);
    }
  for (size_t b : order) {
    blockIdx = {(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
                (unsigned)(b / ((size_t)grid.x * grid.y))};
    emu_reset_shared();
    void *memory = malloc(smem ? smem : 1);
    if (!memory) emu_fail("out of host memory");
    memset(memory, 0xff, smem ? smem : 1);
    emu_dynamic_smem = memory;
    const bool finished = emu_run_block(threads, run, call);
    free(memory);
    if (!finished) {
      emu_kernel_faulted();
      return;
    }
  }
}

// ---------------------------------------------------------------- the runtime API

namespace {

// A kernel that faulted leaves a pending error: as on a GPU, where the launch returned long
// before, nothing reports it until a synchronising call, which makes it sticky; from then on
// every call fails with it. Work queued after the faulted kernel never runs.
cudaError_t last_error = cudaSuccess;  // returned once by cudaGetLastError
cudaError_t pending_error = cudaSuccess;
cudaError_t sticky_error = cudaSuccess;
size_t device_bytes_in_use = 0;

cudaError_t fail(cudaError_t error) {
  if (sticky_error == cudaSuccess) last_error = error;
  return error;
}

// For a synchronising call: the kernels' error (pending ones become sticky now), or cudaSuccess.
cudaError_t synchronize() {
  if (pending_error != cudaSuccess) sticky_error = pending_error, pending_error = cudaSuccess;
  return sticky_error;
}

bool check_device(const char *call, const void *ptr, size_t bytes) {
  if (block_of(ptr, bytes) != blocks.end()) return true;
  fprintf(stderr, "cuda_emu: %s: [%p, +%zu bytes) is not inside one live cudaMalloc block\n", call,
          ptr, bytes);
  return false;
}

}  // namespace

bool emu_is_device_range(const void *ptr, size_t bytes) {
  return block_of(ptr, bytes) != blocks.end();
}

bool emu_skip_async_work(cudaError_t *error) {
  *error = sticky_error;
  return sticky_error != cudaSuccess || pending_error != cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
  }
  return "unknown error";
}

const char *cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorIllegalAddress:
      return "cudaErrorIllegalAddress";
  }
  return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError() {
  if (sticky_error != cudaSuccess) return sticky_error;
  cudaError_t error = last_error;
  last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() {
  return sticky_error != cudaSuccess ? sticky_error : last_error;
}

cudaError_t cudaGetDeviceCount(int *count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
  *ptr = nullptr;
  if (sticky_error != cudaSuccess) return sticky_error;  // (not a synchronising call)
  if (bytes == 0) return cudaSuccess;
  if (bytes > EMU_DEVICE_BYTES - device_bytes_in_use) return fail(cudaErrorMemoryAllocation);
  if (!page_bytes) page_bytes = (size_t)sysconf(_SC_PAGESIZE);
  const size_t rounded = (bytes + 255) / 256 * 256;  // cudaMalloc's alignment
  const size_t pages = (rounded + page_bytes - 1) / page_bytes * page_bytes;
  void *mapping = mmap(nullptr, pages + page_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
  DeviceBlock block = {static_cast<char *>(mapping), pages, bytes};
  char *memory = block.mapping + pages - rounded;
  memset(memory, 0xff, rounded);
  if (mprotect(block.mapping + pages, page_bytes, PROT_NONE) != 0) emu_fail("mprotect failed");
  if (!device_open) protect(block, false);
#if EMU_ASAN
  // the rounding is not the caller's to use: AddressSanitizer reports kernels that touch it
  __asan_poison_memory_region(memory + bytes, rounded - bytes);
#endif
  blocks[memory] = block;
  device_bytes_in_use += bytes;
  *ptr = memory;
  return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
  if (synchronize() != cudaSuccess) return sticky_error;  // cudaFree waits for the device
  if (!ptr) return cudaSuccess;
  auto it = blocks.find(static_cast<const char *>(ptr));
  if (it == blocks.end()) {
    fprintf(stderr, "cuda_emu: cudaFree(%p): not a live cudaMalloc block\n", ptr);
    return fail(cudaErrorInvalidValue);
  }
  const DeviceBlock block = it->second;
  device_bytes_in_use -= block.bytes;
  blocks.erase(it);
#if EMU_ASAN
  __asan_unpoison_memory_region(block.mapping, block.mapping_bytes);
#endif
  munmap(block.mapping, block.mapping_bytes + page_bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  cudaError_t error;
  if (emu_skip_async_work(&error)) return error;
  if (bytes == 0) return cudaSuccess;
  bool ok = true;
  if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
    ok = check_device("cudaMemcpyAsync destination", dst, bytes);
  if (ok && (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice))
    ok = check_device("cudaMemcpyAsync source", src, bytes);
  if (!ok || kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
    return fail(cudaErrorInvalidValue);
  EmuDeviceAccess access;
  memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
  if (synchronize() != cudaSuccess) return sticky_error;
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t) {
  cudaError_t error;
  if (emu_skip_async_work(&error)) return error;
  if (bytes == 0) return cudaSuccess;
  if (!check_device("cudaMemsetAsync", ptr, bytes)) return fail(cudaErrorInvalidValue);
  EmuDeviceAccess access;
  memset(ptr, value, bytes);
  return cudaSuccess;
}

struct CUstream_st {
  int unused;
};

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned) {
  static CUstream_st the_stream;
  if (sticky_error != cudaSuccess) return sticky_error;
  *stream = &the_stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return synchronize();
}

cudaError_t cudaDeviceSynchronize() {
  return synchronize();
}

bool emu_launch_allowed(dim3 grid, dim3 block, size_t smem, const void *kernel) {
  cudaError_t error;
  if (emu_skip_async_work(&error)) return false;  // cudaGetLastError reports a sticky error
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535 || threads == 0 || threads > 1024 || block.z > 64) {
    fprintf(stderr, "cuda_emu: launch of grid (%u,%u,%u), block (%u,%u,%u): invalid\n", grid.x,
            grid.y, grid.z, block.x, block.y, block.z);
    fail(cudaErrorInvalidConfiguration);
    return false;
  }
  const size_t limit = kernel ? emu_smem_limit(kernel) : EMU_DEFAULT_SMEM;
  if (smem > limit) {
    fprintf(stderr, "cuda_emu: launch with %zu bytes of dynamic shared memory; %zu allowed\n", smem,
            limit);
    fail(cudaErrorInvalidValue);
    return false;
  }
  return true;
}

void emu_kernel_faulted() {
  pending_error = cudaErrorIllegalAddress;
}
