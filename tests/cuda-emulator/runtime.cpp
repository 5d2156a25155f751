// The CUDA test emulator's runtime (include/cuda_runtime.h): kernels as fibers, device memory as
// host memory, a device that describes itself as the emulator.
//
// A block's threads are fibers on the launching OS thread, scheduled by run_block: each runs
// until it finishes or reaches __syncthreads or a warp-synchronous call (__syncwarp, a
// shuffle, a WMMA call). A warp's barrier opens once all its lanes that have not exited wait at
// it, the block's once every live thread does; if none can, the block is deadlocked (a barrier
// in divergent code, a shuffle some lanes skip) and the launch fails with a description, where
// a GPU would hang or return garbage. Device and shared memory that nothing has written hold a
// poison pattern (NaN, or 3.4e38 in reverse order).
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "include/cuda_runtime.h"

namespace lt_emu {

thread_local ThreadContext* current = nullptr;

namespace {

constexpr size_t kStackBytes = 256 << 10;
constexpr size_t kMaxThreads = 1024;
constexpr size_t kDefaultDynamicShared = 48 << 10, kMaxDynamicShared = 227 << 10;  // an H100/H200's limits
constexpr int kComputeMajor = 9, kComputeMinor = 0, kMultiprocessors = 132;
constexpr size_t kDeviceMemory = size_t(16) << 30;

// ---- errors: a bad launch is reported once (cudaGetLastError clears it); a failed kernel
// leaves the context broken, as on a GPU: every later call reports it.
std::mutex state_mutex;
cudaError_t last_error = cudaSuccess;
cudaError_t sticky_error = cudaSuccess;
std::string error_detail;

// fail with state_mutex already held.
cudaError_t record_failure(cudaError_t e, const std::string& detail, bool sticky) {
  if (last_error == cudaSuccess) last_error = e, error_detail = detail;
  if (sticky && sticky_error == cudaSuccess) sticky_error = e;
  return e;
}
cudaError_t fail(cudaError_t e, const std::string& detail, bool sticky) {
  std::lock_guard<std::mutex> lock(state_mutex);
  return record_failure(e, detail, sticky);
}
cudaError_t status() {
  std::lock_guard<std::mutex> lock(state_mutex);
  return sticky_error;
}

// ---- thread order and poison ------------------------------------------------------------------
// LORA_TRAIN_EMULATOR_ORDER: forward (default) runs warps and lanes first to last, each warp as
// far as it can before the next; reverse last to first; interleaved switches warps at every
// warp barrier. Memory nothing has written holds a poison pattern: NaN (0xff bytes) in forward
// and interleaved order, 3.4e38 (0x7f bytes: NaN as fp16) in reverse, which fmaxf and
// comparisons do not hide the way they can hide a NaN.
enum class Order { forward, reverse, interleaved };
Order order_from_env(std::string* bad) {
  const char* v = std::getenv("LORA_TRAIN_EMULATOR_ORDER");
  const std::string o = v ? v : "forward";
  if (o == "reverse") return Order::reverse;
  if (o == "interleaved") return Order::interleaved;
  if (o != "forward" && bad) *bad = "LORA_TRAIN_EMULATOR_ORDER=" + o + " (forward, reverse or interleaved)";
  return Order::forward;
}
unsigned char poison_byte(Order o) { return o == Order::reverse ? 0x7f : 0xff; }

// ---- device memory -------------------------------------------------------------------------
// Device memory is one reserved range of address space, in page-aligned blocks, each followed
// by a guard page that stays unmapped and ending (to 256 bytes) at it, so a kernel running past
// the end of an allocation faults; a freed block is reused for the next allocation of its size.
// With LORA_TRAIN_EMULATOR_PROTECT=1 host code cannot touch it: it is readable and writable
// only while the emulator works on it (a kernel, a copy, cuBLASLt; see DeviceAccess), so host
// code dereferencing a device pointer faults here as it would with a GPU, and the fault handler
// says so. (Off by default: switching the pages' protection at every launch makes a long test
// run ten times slower.) Under ASan, plain heap blocks, which ASan guards.
std::map<void*, size_t> allocations;  // under state_mutex
size_t allocated_bytes = 0;

#ifndef __SANITIZE_ADDRESS__
constexpr size_t kPage = 4096, kHeapReserve = size_t(1) << 40;
char* heap = nullptr;
size_t heap_used = 0;                      // under state_mutex
std::multimap<size_t, char*> free_blocks;  // by size; under state_mutex
bool protect = false;                      // set once, with the heap
std::recursive_mutex access_mutex;
int access_depth = 0;  // under access_mutex
struct sigaction previous_segv;

void write_hex(char* out, uintptr_t v) {
  for (int i = 15; i >= 0; --i, v >>= 4) out[i] = "0123456789abcdef"[v & 15];
}

void on_segv(int sig, siginfo_t* info, void* context) {
  const auto a = reinterpret_cast<uintptr_t>(info->si_addr), base = reinterpret_cast<uintptr_t>(heap);
  if (heap && a >= base && a < base + kHeapReserve) {
    char msg[] =
        "lora-train CUDA emulator: a kernel read or wrote past the end of a device allocation (into its guard "
        "page), or host code touched device memory outside a kernel or a copy, at 0x0000000000000000; a GPU "
        "faults there too\n";
    write_hex(std::strstr(msg, "0x") + 2, a);
    if (::write(2, msg, sizeof(msg) - 1) < 0) {
    }
    sigaction(SIGSEGV, &previous_segv, nullptr);  // the access faults again, now fatally
    return;
  }
  if (previous_segv.sa_flags & SA_SIGINFO)
    previous_segv.sa_sigaction(sig, info, context);
  else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN)
    previous_segv.sa_handler(sig);
  else
    signal(SIGSEGV, SIG_DFL);
}

char* reserve_heap() {
  void* h = mmap(nullptr, kHeapReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (h == MAP_FAILED) return nullptr;
  const char* p = std::getenv("LORA_TRAIN_EMULATOR_PROTECT");
  protect = p && std::string(p) == "1";
  struct sigaction action {};
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &previous_segv);
  return static_cast<char*>(h);
}

size_t block_bytes(size_t bytes) { return (std::max<size_t>(bytes, 1) + kPage - 1) / kPage * kPage; }
// Where an allocation of `bytes` starts in its block: 256-byte aligned, as late as that allows.
size_t offset_in_block(size_t bytes) { return block_bytes(bytes) - (std::max<size_t>(bytes, 1) + 255) / 256 * 256; }
#endif

}  // namespace

DeviceAccess::DeviceAccess() {
#ifndef __SANITIZE_ADDRESS__
  if (!protect) return;
  access_mutex.lock();
  if (access_depth++ == 0 && heap) {
    std::lock_guard<std::mutex> lock(state_mutex);
    mprotect(heap, heap_used, PROT_READ | PROT_WRITE);
  }
#endif
}

DeviceAccess::~DeviceAccess() {
#ifndef __SANITIZE_ADDRESS__
  if (!protect) return;
  if (--access_depth == 0 && heap) {
    std::lock_guard<std::mutex> lock(state_mutex);
    mprotect(heap, heap_used, PROT_NONE);
  }
  access_mutex.unlock();
#endif
}

namespace {

cudaError_t device_alloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue, "cudaMalloc: null result pointer", false);
  void* q = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    if (allocated_bytes + bytes > kDeviceMemory)
      return record_failure(cudaErrorMemoryAllocation, "out of emulated device memory", false);
#ifdef __SANITIZE_ADDRESS__
    q = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
#else
    static char* const reserved = reserve_heap();
    heap = reserved;
    char* block = nullptr;
    auto reuse = free_blocks.find(block_bytes(bytes));
    if (reuse != free_blocks.end())
      block = reuse->second, free_blocks.erase(reuse);
    else if (heap && heap_used + block_bytes(bytes) + kPage <= kHeapReserve) {
      block = heap + heap_used;
      heap_used += block_bytes(bytes) + kPage;  // the guard page after it stays PROT_NONE
      if (!protect && mprotect(block, block_bytes(bytes), PROT_READ | PROT_WRITE) != 0) block = nullptr;
    }
    if (block) q = block + offset_in_block(bytes);
#endif
    if (!q)
      return record_failure(cudaErrorMemoryAllocation, "the emulator's address space for device memory is used up",
                            false);
    allocations[q] = bytes;
    allocated_bytes += bytes;
  }
  // Poison: a kernel reading memory nothing has written gets NaN (or 3.4e38), not a lucky zero.
  DeviceAccess access;
  std::memset(q, poison_byte(order_from_env(nullptr)), bytes);
  *p = q;
  return status();
}

cudaError_t device_free(void* p) {
  if (!p) return status();
  size_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    auto it = allocations.find(p);
    if (it == allocations.end())
      return record_failure(cudaErrorInvalidDevicePointer, "cudaFree of a pointer cudaMalloc did not return", false);
    bytes = it->second;
    allocated_bytes -= bytes;
    allocations.erase(it);
#ifndef __SANITIZE_ADDRESS__
    free_blocks.emplace(block_bytes(bytes), static_cast<char*>(p) - offset_in_block(bytes));
#endif
  }
#ifdef __SANITIZE_ADDRESS__
  std::free(p);
#endif
  return status();
}

std::vector<std::pair<void*, size_t>> registered_shared;  // __shared__ statics; under launch_mutex

// ---- fibers ----------------------------------------------------------------------------------
// A switch saves the callee-saved registers and the stack pointer: a few instructions on
// x86-64, where swapcontext would also make two system calls for the signal mask. Elsewhere,
// and under AddressSanitizer (which must see stack switches through ucontext), ucontext.
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
extern "C" void lt_emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .p2align 4
  .type lt_emu_switch, @function
lt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size lt_emu_switch, .-lt_emu_switch
)");
struct Context {
  void* sp = nullptr;
};
void switch_context(Context& from, Context& to) { lt_emu_switch(&from.sp, to.sp); }
// A context whose first switch enters `entry` on `stack`, as if called (entry never returns).
void prepare_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
  void** sp = reinterpret_cast<void**>((reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t(15));
  *--sp = nullptr;                         // entry's own return address
  *--sp = reinterpret_cast<void*>(entry);  // where lt_emu_switch's ret goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};
void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
// (A function of its own: getcontext returns twice as far as the compiler knows, which would
// clobber a caller's loop variables.)
__attribute__((noinline)) void prepare_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

enum class FiberState { ready, at_block_barrier, at_warp_barrier, done };

struct Fiber {
  Context context;
  ThreadContext thread;
  FiberState state = FiberState::ready;
  uint64_t warp_calls = 0;  // warp-synchronous calls made so far
};

// What one lane gives a warp-synchronous call: a shuffled value, or a warp-matrix operation's
// registers (warp_matrix.h).
struct ExchangeSlot {
  unsigned char bytes[kMaxExchangeBytes];
};

struct Block {
  std::vector<Fiber> fibers;
  std::unique_ptr<unsigned char[], void (*)(void*)> shared{nullptr, std::free};  // 128-byte aligned
  size_t shared_bytes = 0;
  unsigned char poison = 0xff;
  // A lane's value for its warp's current and previous exchange (by call parity), so lanes
  // that run on after an exchange do not overwrite values a later lane still reads.
  std::vector<ExchangeSlot> exchange[2];
  Context scheduler;
  Fiber* running = nullptr;
  void (*body)(void*) = nullptr;
  void* body_context = nullptr;
  std::string failure;
};

thread_local Block* block = nullptr;
thread_local std::vector<void*> stacks;

void* stack_of(size_t i) {
  while (stacks.size() <= i) {
    void* s = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) throw std::runtime_error("cuda emulator: cannot map a fiber stack");
    stacks.push_back(s);
  }
  return stacks[i];
}

[[noreturn]] void fiber_main() {
  Block* b = block;
  try {
    b->body(b->body_context);
  } catch (const std::exception& e) {
    if (b->failure.empty()) b->failure = e.what();
  } catch (...) {
    if (b->failure.empty()) b->failure = "an exception that is not a std::exception";
  }
  b->running->state = FiberState::done;
  switch_context(b->running->context, b->scheduler);  // never resumed
  __builtin_unreachable();
}

void yield(FiberState state) {
  Fiber* f = block->running;
  f->state = state;
  switch_context(f->context, block->scheduler);
  current = &block->running->thread;
}

// Opens the warp [w, end)'s barrier when all its lanes that have not exited wait at the same
// warp-synchronous call (CUDA's rule for a full mask).
bool release_warp(Block& b, size_t w, size_t end) {
  const Fiber* first = nullptr;
  for (size_t i = w; i < end; ++i) {
    const Fiber& f = b.fibers[i];
    if (f.state == FiberState::done) continue;
    if (f.state != FiberState::at_warp_barrier || (first && f.warp_calls != first->warp_calls)) return false;
    if (!first) first = &f;
  }
  if (!first) return false;
  if (end - w < 32)
    throw std::logic_error("a warp-synchronous call with a full mask in a warp of " + std::to_string(end - w) +
                           " threads");
  for (size_t i = w; i < end; ++i)
    if (b.fibers[i].state == FiberState::at_warp_barrier) b.fibers[i].state = FiberState::ready;
  return true;
}

// Opens __syncthreads when every live thread waits there.
bool release_block(Block& b) {
  bool any_live = false;
  for (const Fiber& f : b.fibers) {
    if (f.state == FiberState::done) continue;
    if (f.state != FiberState::at_block_barrier) return false;
    any_live = true;
  }
  for (Fiber& f : b.fibers) f.state = f.state == FiberState::done ? f.state : FiberState::ready;
  return any_live;
}

std::string describe_deadlock(const Block& b) {
  int done = 0, at_block = 0, at_warp = 0;
  for (const Fiber& f : b.fibers) {
    done += f.state == FiberState::done;
    at_block += f.state == FiberState::at_block_barrier;
    at_warp += f.state == FiberState::at_warp_barrier;
  }
  return "deadlock: " + std::to_string(at_block) + " threads wait at __syncthreads, " + std::to_string(at_warp) +
         " at a warp-synchronous call (__syncwarp or a shuffle) that not all lanes of their warp reach, " +
         std::to_string(done) + " have finished";
}

void start_fibers(Block& b, uint3 block_idx, dim3 t, dim3 g) {
  for (size_t i = 0; i < b.fibers.size(); ++i) {
    Fiber& f = b.fibers[i];
    f.state = FiberState::ready;
    f.warp_calls = 0;
    f.thread = {{static_cast<unsigned>(i % t.x), static_cast<unsigned>(i / t.x % t.y),
                 static_cast<unsigned>(i / (size_t(t.x) * t.y))},
                block_idx,
                t,
                g};
    prepare_context(f.context, stack_of(i), kStackBytes, fiber_main);
  }
}

// Runs lane by lane up to each lane's next barrier: in forward and reverse order each warp
// runs as far as it can (through its own warp barriers) before the next starts, one warp
// getting ahead of the others as far as a GPU may let it, so a read of another warp's writes
// that lacks a __syncthreads sees them unwritten in one of the two orders; interleaved
// switches to the next warp at every warp barrier, so warps that should keep to their own
// part of shared memory between barriers see each other's writes.
void run_block(Block& b, Order order) {
  const size_t n = b.fibers.size(), warps = (n + 31) / 32;
  const bool reverse = order == Order::reverse;
  auto run_lanes = [&](size_t w, size_t end) {
    bool ran = false;
    for (size_t j = 0; j < end - w && b.failure.empty(); ++j) {
      Fiber& f = b.fibers[reverse ? end - 1 - j : w + j];
      if (f.state != FiberState::ready) continue;
      b.running = &f;
      current = &f.thread;
      switch_context(b.scheduler, f.context);
      ran = true;
    }
    return ran;
  };
  for (;;) {
    for (bool progress = true; progress && b.failure.empty();) {
      progress = false;
      for (size_t k = 0; k < warps && b.failure.empty(); ++k) {
        const size_t w = 32 * (reverse ? warps - 1 - k : k), end = std::min(n, w + 32);
        if (order == Order::interleaved) {
          progress |= run_lanes(w, end);
          release_warp(b, w, end);
        } else {
          do run_lanes(w, end);
          while (b.failure.empty() && release_warp(b, w, end));
        }
      }
    }
    if (!b.failure.empty()) return;
    if (!release_block(b)) break;
  }
  for (const Fiber& f : b.fibers)
    if (f.state != FiberState::done) {
      b.failure = describe_deadlock(b);
      return;
    }
}

std::map<const void*, int> max_dynamic_shared;  // under state_mutex
std::mutex launch_mutex;                        // statics are the running block's shared memory

std::string dims(dim3 d) { return std::to_string(d.x) + "x" + std::to_string(d.y) + "x" + std::to_string(d.z); }

}  // namespace

void sync_block() {
  if (!block) throw std::logic_error("__syncthreads outside a kernel");
  yield(FiberState::at_block_barrier);
}

void sync_warp(const void* value, size_t bytes) {
  if (!block) throw std::logic_error("a warp-synchronous call outside a kernel");
  Fiber* f = block->running;
  const int id = linear_thread_id(f->thread);
  if (bytes > kMaxExchangeBytes)
    throw std::logic_error("cuda emulator: a warp exchange of more than " + std::to_string(kMaxExchangeBytes) +
                           " bytes");
  ExchangeSlot& slot = block->exchange[(f->warp_calls + 1) & 1][id];
  if (value) std::memcpy(slot.bytes, value, bytes);
  ++f->warp_calls;
  yield(FiberState::at_warp_barrier);
}

void exchanged_value(int lane, void* out, size_t bytes) {
  Fiber* f = block->running;
  const int id = linear_thread_id(f->thread);
  const int source = id - id % 32 + lane;
  if (lane < 0 || lane >= 32 || source >= static_cast<int>(block->fibers.size()))
    throw std::logic_error("a shuffle from lane " + std::to_string(lane) + ", which does not exist");
  // A lane that exited before this call gave nothing; one that gave and has exited since
  // (running ahead of this one after the barrier) still counts.
  if (block->fibers[source].warp_calls < f->warp_calls) return (void)std::memset(out, block->poison, bytes);
  std::memcpy(out, block->exchange[f->warp_calls & 1][source].bytes, bytes);
}

unsigned char* dynamic_shared_memory() {
  if (!block) throw std::logic_error("dynamic shared memory outside a kernel");
  return block->shared.get();
}

void check_in_shared(const void* p, size_t bytes, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (!block || c < block->shared.get() || c + bytes > block->shared.get() + block->shared_bytes)
    throw std::logic_error(std::string(what) + ": an address outside the block's dynamic shared memory");
}

bool register_shared(void* p, size_t bytes) {
  registered_shared.emplace_back(p, bytes);
  std::memset(p, block ? block->poison : 0xff, bytes);  // the first thread to declare it, before any use
  return true;
}

cudaError_t set_function_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > kMaxDynamicShared)
    return fail(cudaErrorInvalidValue,
                "cudaFuncSetAttribute: " + std::to_string(value) + " bytes of dynamic shared memory", false);
  std::lock_guard<std::mutex> lock(state_mutex);
  max_dynamic_shared[kernel] = value;
  return sticky_error;
}

void run_grid(const LaunchConfig& config, void (*body)(void*), void* context) {
  if (status() != cudaSuccess) return;
  const dim3 g = config.grid, t = config.block;
  const size_t threads = size_t(t.x) * t.y * t.z;
  size_t shared_limit = kDefaultDynamicShared;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    auto it = max_dynamic_shared.find(config.kernel);
    if (it != max_dynamic_shared.end()) shared_limit = it->second;
  }
  std::string bad;
  if (threads == 0 || threads > kMaxThreads || t.z > 64)
    bad = "a block of " + dims(t) + " threads";
  else if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    bad = "a grid of " + dims(g) + " blocks";
  else if (config.shared_bytes > shared_limit)
    bad = std::to_string(config.shared_bytes) + " bytes of dynamic shared memory (the kernel may use " +
          std::to_string(shared_limit) + "; cudaFuncSetAttribute raises it)";
  const Order order = order_from_env(&bad);
  if (!bad.empty()) {
    fail(cudaErrorInvalidConfiguration, "invalid launch: " + bad, false);
    return;
  }
  DeviceAccess access;
  std::lock_guard<std::mutex> lock(launch_mutex);
  Block b;
  b.body = body;
  b.body_context = context;
  b.fibers.resize(threads);
  b.exchange[0].assign(threads + 32, ExchangeSlot{});
  b.exchange[1].assign(threads + 32, ExchangeSlot{});
  // Exactly the bytes asked for (ASan builds catch overruns), aligned as __align__(128) asks.
  b.shared_bytes = std::max<size_t>(config.shared_bytes, 1);
  b.shared.reset(static_cast<unsigned char*>(std::aligned_alloc(128, (b.shared_bytes + 127) / 128 * 128)));
  b.poison = poison_byte(order);
  block = &b;
  const size_t blocks = size_t(g.x) * g.y * g.z;
  for (size_t k = 0; k < blocks && b.failure.empty(); ++k) {
    // Blocks run in the threads' order too: a result that depends on which block writes last
    // differs between the two.
    const size_t index = order == Order::reverse ? blocks - 1 - k : k;
    const unsigned bx = index % g.x, by = index / g.x % g.y, bz = index / (size_t(g.x) * g.y);
    std::memset(b.shared.get(), b.poison, b.shared_bytes);
    for (auto [p, bytes] : registered_shared) std::memset(p, b.poison, bytes);
    start_fibers(b, {bx, by, bz}, t, g);
    try {
      run_block(b, order);
    } catch (const std::exception& e) {
      b.failure = e.what();
    }
    if (!b.failure.empty())
      b.failure =
          "block (" + std::to_string(bx) + ", " + std::to_string(by) + ", " + std::to_string(bz) + "): " + b.failure;
  }
  block = nullptr;
  current = nullptr;
  if (!b.failure.empty()) fail(cudaErrorLaunchFailure, "kernel failed in " + b.failure, true);
}

bool is_device_span(const void* p, size_t bytes) {
  if (!p) return false;
  std::lock_guard<std::mutex> lock(state_mutex);
  auto it = allocations.upper_bound(const_cast<void*>(p));
  if (it == allocations.begin()) return false;
  --it;
  const char *q = static_cast<const char*>(p), *base = static_cast<const char*>(it->first);
  return q >= base && q + bytes <= base + it->second;
}

bool is_device_pointer(const void* p) { return !p || is_device_span(p, 0); }

void fail_host_pointer(int index) {
  fail(cudaErrorIllegalAddress,
       "kernel argument " + std::to_string(index + 1) + " points outside device memory (a host pointer?)", true);
}

void* open_library(const char* file, int flags) {
  const std::string name = file ? file : "";
  if (name == "libcuda.so.1" || name.rfind("libcublasLt.so", 0) == 0 || name.rfind("libnccl.so", 0) == 0) {
    Dl_info self;
    if (dladdr(reinterpret_cast<void*>(&open_library), &self) && self.dli_fname)
      return (dlopen)(self.dli_fname, RTLD_NOW | RTLD_LOCAL);
  }
  return (dlopen)(file, flags);
}

}  // namespace lt_emu

using lt_emu::fail;
using lt_emu::status;

const char* cudaGetErrorString(cudaError_t e) {
  static thread_local std::string text;
  const char* name = e == cudaSuccess                     ? "no error"
                     : e == cudaErrorInvalidValue         ? "invalid argument"
                     : e == cudaErrorMemoryAllocation     ? "out of memory"
                     : e == cudaErrorInvalidConfiguration ? "invalid configuration argument"
                     : e == cudaErrorInvalidDevicePointer ? "invalid device pointer"
                     : e == cudaErrorIllegalAddress       ? "an illegal memory access was encountered"
                     : e == cudaErrorLaunchFailure        ? "unspecified launch failure"
                                                          : "unknown error";
  std::lock_guard<std::mutex> lock(lt_emu::state_mutex);
  text = name;
  if (e != cudaSuccess && !lt_emu::error_detail.empty()) text += " (cuda emulator: " + lt_emu::error_detail + ")";
  return text.c_str();
}

cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(lt_emu::state_mutex);
  const cudaError_t e = lt_emu::last_error != cudaSuccess ? lt_emu::last_error : lt_emu::sticky_error;
  lt_emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return status();
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = lt_emu::kMultiprocessors;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = lt_emu::kComputeMajor;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = lt_emu::kComputeMinor;
      break;
    default:
      return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: an attribute the emulator lacks", false);
  }
  return status();
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  *prop = {};
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulated on the CPU (lora-train's test emulator)");
  prop->totalGlobalMem = lt_emu::kDeviceMemory;
  prop->major = lt_emu::kComputeMajor;
  prop->minor = lt_emu::kComputeMinor;
  prop->multiProcessorCount = lt_emu::kMultiprocessors;
  return status();
}
cudaError_t cudaDeviceSynchronize() { return status(); }

cudaError_t cudaMalloc(void** p, size_t bytes) { return lt_emu::device_alloc(p, bytes); }
cudaError_t cudaFree(void* p) { return lt_emu::device_free(p); }
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return lt_emu::device_alloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return lt_emu::device_free(p); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (status() != cudaSuccess) return status();
  if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue, "cudaMemcpy with a null pointer", false);
  const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (bytes &&
      ((to_device && !lt_emu::is_device_span(dst, bytes)) || (from_device && !lt_emu::is_device_span(src, bytes))))
    return fail(cudaErrorInvalidValue, "cudaMemcpy of " + std::to_string(bytes) + " bytes outside a device allocation",
                false);
  lt_emu::DeviceAccess access;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (status() != cudaSuccess) return status();
  if (bytes && !lt_emu::is_device_span(p, bytes))
    return fail(cudaErrorInvalidValue, "cudaMemset of " + std::to_string(bytes) + " bytes outside a device allocation",
                false);
  lt_emu::DeviceAccess access;
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = nullptr;
  return status();
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return status(); }
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return status(); }

struct EmuEvent {
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new EmuEvent;
  return status();
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return status();
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = std::chrono::steady_clock::now();
  e->recorded = true;
  return status();
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }

struct EmuStream {};
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new EmuStream;
  return status();
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return status();
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return status(); }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t e, unsigned) {
  if (!e->recorded) return fail(cudaErrorInvalidValue, "cudaStreamWaitEvent on an unrecorded event", false);
  return status();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  if (!start->recorded || !stop->recorded)
    return fail(cudaErrorInvalidValue, "cudaEventElapsedTime of an unrecorded event", false);
  *ms = std::chrono::duration<float, std::milli>(stop->at - start->at).count();
  return status();
}
