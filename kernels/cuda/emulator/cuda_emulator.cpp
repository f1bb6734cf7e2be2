// The CUDA emulator's scheduler and runtime (see cuda_emulator.h for what it is for).
//
// A launch runs its blocks in turn. A block's threads are fibers on the calling CPU
// thread; the scheduler resumes them round-robin. A fiber runs until it must wait for
// others (a block or warp barrier; a shuffle is two warp barriers around a posted value)
// or finishes. Each barrier counts the threads that arrived against those still alive
// and releases everyone when they match; a thread that finishes stops counting, as on the
// GPU. A pass over all waiting fibers in which nothing arrived, released or finished is a
// deadlock: the launch fails with a message naming the block.
//
// Switching fibers: on x86-64 a dozen instructions that swap the callee-saved registers
// and the stack pointer (switch_stack below), about 100 times faster than swapcontext,
// which makes two system calls per switch to save and restore the signal mask; kernels
// switch at every shuffle, so this sets the speed of the emulated tests. Elsewhere,
// ucontext.
#include "kernels/cuda/emulator/cuda_emulator.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace tessera::kernels::cuda::emulator {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per CUDA thread; pages are touched lazily
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;  // an H100's opt-in limit per block

// A barrier over a changing set of live threads.
struct Barrier {
  int live = 0;
  int arrived = 0;
  uint64_t generation = 0;
};

#if defined(__x86_64__)
// switch_stack(save, load): pushes the callee-saved registers and the SSE/x87 control
// words on the current stack, stores the stack pointer in *save, loads `load` and pops
// the same from there. A fresh stack is prepared (start_stack) so that the first switch
// to it "returns" into fiber_entry.
extern "C" void tessera_emulator_switch_stack(void** save, void* load);
asm(R"(
  .text
  .globl tessera_emulator_switch_stack
  .type tessera_emulator_switch_stack, @function
tessera_emulator_switch_stack:
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
  .size tessera_emulator_switch_stack, .-tessera_emulator_switch_stack
)");
struct Context {
  void* sp = nullptr;
};
void switch_context(Context& save, Context& load) {
  tessera_emulator_switch_stack(&save.sp, load.sp);
}
// Lays out [control words][r15..rbp = 0][return address = entry][0] below the top of the
// stack, 16-byte aligned as at a call, so that switching to it starts entry().
void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  auto* top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15});
  *--top = 0;                                   // entry's (never used) return address
  *--top = reinterpret_cast<uint64_t>(entry);  // popped by `ret`
  for (int i = 0; i < 6; i++) *--top = 0;       // rbp, rbx, r12..r15
  *--top = 0x037F'00001F80ull;                  // MXCSR and x87 control word defaults
  c.sp = top;
}
#else
struct Context {
  ucontext_t uc;
};
void switch_context(Context& save, Context& load) { swapcontext(&save.uc, &load.uc); }
void start_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
#endif

struct Fiber {
  Context context;
  dim3 thread_idx;
  int warp = 0, lane = 0;
  bool done = false;
};

struct Block {
  dim3 block_idx, block_dim, grid_dim;
  std::vector<Fiber> fibers;
  int current = -1;
  Context scheduler;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<uint64_t> warp_slots;  // [warp][32] posted shuffle values
  uint64_t progress = 0;              // bumped whenever a thread arrives, is released or ends
  const std::function<void()>* body = nullptr;
};

std::mutex g_launch_mutex;  // one grid at a time: __shared__ variables are single copies
Block* g_block = nullptr;
char* g_stacks = nullptr;  // kMaxThreadsPerBlock stacks, mapped once
std::vector<unsigned char> g_dynamic_smem;
// The sticky error of cudaGetLastError, and the emulator's words for the latest error
// (kept after cudaGetLastError clears the code, for cudaGetErrorString).
cudaError_t g_last_error = cudaSuccess;
cudaError_t g_detailed_error = cudaSuccess;
std::string g_error_detail;

void set_error(cudaError_t err, std::string detail) {
  if (g_last_error == cudaSuccess) g_last_error = err;
  g_detailed_error = err;
  g_error_detail = std::move(detail);
}

Fiber& me() { return g_block->fibers[(size_t)g_block->current]; }

void yield_to_scheduler() { switch_context(me().context, g_block->scheduler); }

// Arrive at b and wait until every live thread it counts has arrived.
void wait_at(Barrier& b) {
  const uint64_t generation = b.generation;
  g_block->progress++;
  if (++b.arrived == b.live) {
    b.arrived = 0;
    b.generation++;
    return;
  }
  while (b.generation == generation) yield_to_scheduler();
}

// A thread that ends no longer counts; if everyone else was waiting for it, release them.
void leave(Barrier& b) {
  b.live--;
  if (b.arrived > 0 && b.arrived == b.live) {
    b.arrived = 0;
    b.generation++;
  }
}

// Where every fiber starts; it never returns (there is nothing to return to): it
// switches back to the scheduler for the last time.
void fiber_entry() {
  Fiber& f = me();
  try {
    (*g_block->body)();
  } catch (const std::exception& e) {
    set_error(cudaErrorLaunchFailure, std::string("a kernel threw: ") + e.what());
  }
  f.done = true;
  g_block->progress++;
  leave(g_block->block_barrier);
  leave(g_block->warp_barriers[(size_t)f.warp]);
  switch_context(f.context, g_block->scheduler);
}

std::string block_name(const dim3& b) {
  char text[64];
  std::snprintf(text, sizeof text, "(%u,%u,%u)", b.x, b.y, b.z);
  return text;
}

// Runs one block to completion; false on a deadlock (the error is set).
bool run_block(Block& block) {
  const int n = (int)block.fibers.size();
  for (int i = 0; i < n; i++) {
    Fiber& f = block.fibers[(size_t)i];
    start_context(f.context, g_stacks + (size_t)i * kStackBytes, kStackBytes, fiber_entry);
  }
  int remaining = n;
  // The threads of one pass run in turn, each until it waits; the direction alternates
  // between passes and blocks, so that a missing barrier shows whichever way round the
  // writer and the reader are (thread 0 first would hide a read of thread 5's write).
  bool reverse = (block.block_idx.x + block.block_idx.y + block.block_idx.z) % 2 == 1;
  while (remaining > 0) {
    const uint64_t progress_before = block.progress;
    for (int k = 0; k < n; k++) {
      const int i = reverse ? n - 1 - k : k;
      if (block.fibers[(size_t)i].done) continue;
      block.current = i;
      switch_context(block.scheduler, block.fibers[(size_t)i].context);
      if (block.fibers[(size_t)i].done) remaining--;
    }
    reverse = !reverse;
    if (remaining > 0 && block.progress == progress_before) {
      set_error(cudaErrorLaunchFailure,
                "emulator: deadlock in block " + block_name(block.block_idx) +
                    ": a __syncthreads, __syncwarp or warp shuffle that not every live thread "
                    "of the block (warp) reaches");
      return false;
    }
  }
  return true;
}

}  // namespace

void run_grid(dim3 grid, dim3 block_dim, size_t dynamic_smem_bytes,
              const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  const long long threads = (long long)block_dim.x * block_dim.y * block_dim.z;
  if (threads < 1 || threads > kMaxThreadsPerBlock || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
      grid.y > 65535 || grid.z > 65535 || dynamic_smem_bytes > kMaxDynamicSmem) {
    set_error(cudaErrorInvalidConfiguration,
              "emulator: launch of " + std::to_string(threads) + " threads per block, grid " +
                  block_name(grid) + ", " + std::to_string(dynamic_smem_bytes) +
                  " bytes of dynamic shared memory");
    return;
  }
  if (!g_stacks) {
    void* p = mmap(nullptr, kStackBytes * kMaxThreadsPerBlock, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    g_stacks = static_cast<char*>(p);
  }
  const int warps = (int)((threads + 31) / 32);
  for (unsigned bz = 0; bz < grid.z; bz++)
    for (unsigned by = 0; by < grid.y; by++)
      for (unsigned bx = 0; bx < grid.x; bx++) {
        // Fresh garbage in the dynamic shared memory for every block (NaN as floats).
        g_dynamic_smem.assign(dynamic_smem_bytes + 16, 0xFF);
        Block block;
        block.block_idx = dim3(bx, by, bz);
        block.block_dim = block_dim;
        block.grid_dim = grid;
        block.body = &body;
        block.fibers.resize((size_t)threads);
        block.block_barrier.live = (int)threads;
        block.warp_barriers.resize((size_t)warps);
        block.warp_slots.assign((size_t)warps * 32, 0);
        int linear = 0;
        for (unsigned z = 0; z < block_dim.z; z++)
          for (unsigned y = 0; y < block_dim.y; y++)
            for (unsigned x = 0; x < block_dim.x; x++, linear++) {
              Fiber& f = block.fibers[(size_t)linear];
              f.thread_idx = dim3(x, y, z);
              f.warp = linear / 32;
              f.lane = linear % 32;
              block.warp_barriers[(size_t)f.warp].live++;
            }
        g_block = &block;
        const bool ok = run_block(block);
        g_block = nullptr;
        if (!ok) return;
      }
}

dim3 thread_idx() { return me().thread_idx; }
dim3 block_idx() { return g_block->block_idx; }
dim3 block_dim() { return g_block->block_dim; }
dim3 grid_dim() { return g_block->grid_dim; }
int lane_id() { return me().lane; }

void* dynamic_shared_memory() {
  // 16-byte aligned, as CUDA's (vector loads of float4 from shared memory).
  auto addr = reinterpret_cast<uintptr_t>(g_dynamic_smem.data());
  return reinterpret_cast<void*>((addr + 15) & ~uintptr_t{15});
}

void sync_threads() { wait_at(g_block->block_barrier); }
void sync_warp() { wait_at(g_block->warp_barriers[(size_t)me().warp]); }

uint64_t warp_exchange(uint64_t value, int src_lane) {
  const int warp = me().warp, lane = me().lane;
  Barrier& barrier = g_block->warp_barriers[(size_t)warp];
  uint64_t* slots = &g_block->warp_slots[(size_t)warp * 32];
  slots[lane] = value;
  wait_at(barrier);  // every lane has posted
  const bool valid = src_lane >= 0 && src_lane < 32 &&
                     (size_t)(warp * 32 + src_lane) < g_block->fibers.size();
  const uint64_t got = valid ? slots[src_lane] : value;
  wait_at(barrier);  // every lane has read before anyone posts again
  return got;
}

}  // namespace tessera::kernels::cuda::emulator

namespace emu = tessera::kernels::cuda::emulator;

unsigned __ballot_sync(unsigned, int predicate) {
  unsigned bits = 0;
  for (int src = 0; src < 32; src++)
    bits |= (unsigned)(emu::shuffle<int>(predicate ? 1 : 0, src) & 1) << src;
  return bits;
}

// ---- streams and events: results in flight (land_later in cuda_emulator.h) ---------------
struct CUstream_st {
  struct Landing {
    uint64_t seq;           // order on the stream
    std::thread::id maker;  // the thread that made the operation
    std::function<void()> land;
  };
  std::deque<Landing> in_flight;
  uint64_t next_seq = 0;
};
struct CUevent_st {
  cudaStream_t stream = nullptr;  // where it was last recorded
  uint64_t seq = 0;               // it follows the landings with a smaller seq
};

namespace tessera::kernels::cuda::emulator {
namespace {
std::mutex g_streams_mutex;  // the NCCL watchdog queries events from its own thread
std::set<cudaStream_t> g_streams;

// Lands `s`'s results made before `seq`, in order; with maker_only, stops (false) at one
// that another thread made.
bool land_before(cudaStream_t s, uint64_t seq, bool maker_only) {
  while (!s->in_flight.empty() && s->in_flight.front().seq < seq) {
    if (maker_only && s->in_flight.front().maker != std::this_thread::get_id()) return false;
    const std::function<void()> land = std::move(s->in_flight.front().land);
    s->in_flight.pop_front();
    land();
  }
  return true;
}
}  // namespace

void land_later(cudaStream_t stream, std::function<void()> land) {
  if (!stream) return land();
  std::lock_guard<std::mutex> lock(g_streams_mutex);
  stream->in_flight.push_back({stream->next_seq++, std::this_thread::get_id(), std::move(land)});
}

void land_pending(cudaStream_t stream) {
  if (!stream) return;
  std::lock_guard<std::mutex> lock(g_streams_mutex);
  land_before(stream, UINT64_MAX, false);
}
}  // namespace tessera::kernels::cuda::emulator

// ---- the runtime API ------------------------------------------------------------------

const char* cudaGetErrorName(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotReady: return "cudaErrorNotReady";
  }
  return "unknown CUDA error";
}

const char* cudaGetErrorString(cudaError_t err) {
  // The emulator's detail (which block deadlocked, which configuration) is more useful
  // than the generic name, so it is given for the kind of error that was last set.
  if (err != cudaSuccess && err == emu::g_detailed_error) return emu::g_error_detail.c_str();
  return cudaGetErrorName(err);
}

cudaError_t cudaGetLastError() {
  const cudaError_t err = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return err;
}
cudaError_t cudaPeekAtLastError() { return emu::g_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : cudaErrorInvalidValue;
}

// An H100-like device: the limits kernels query when they choose their launch shapes.
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulator (CPU)");
  prop->totalGlobalMem = size_t{80} << 30;
  prop->sharedMemPerBlockOptin = emu::kMaxDynamicSmem;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)prop.sharedMemPerBlockOptin; break;
    case cudaDevAttrMultiProcessorCount: *value = prop.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = prop.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = prop.minor; break;
  }
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;  // not a CUDA runtime
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = size_t{80} << 30;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  // 256-byte aligned like cudaMalloc, so alignment assumptions of vector loads hold.
  *p = bytes ? std::aligned_alloc(256, (bytes + 255) / 256 * 256) : nullptr;
  return (*p || !bytes) ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  if (p) cudaDeviceSynchronize();  // as on a GPU: what is in flight may still write there
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  emu::land_pending(stream);
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  emu::land_pending(stream);
  return cudaMemset(p, value, bytes);
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = new CUstream_st;
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  emu::g_streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  return cudaStreamCreate(stream);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  emu::land_pending(stream);  // a destroyed stream's work still completes
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  emu::g_streams.erase(stream);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  emu::land_pending(stream);
  return emu::g_last_error;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned) {
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  if (event->stream) emu::land_before(event->stream, event->seq, false);
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  for (cudaStream_t stream : emu::g_streams) emu::land_before(stream, UINT64_MAX, false);
  return emu::g_last_error;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  return cudaEventCreate(event);
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  event->stream = stream;
  event->seq = stream ? stream->next_seq : 0;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  if (event->stream) emu::land_before(event->stream, event->seq, false);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(emu::g_streams_mutex);
  if (!event->stream || emu::land_before(event->stream, event->seq, true)) return cudaSuccess;
  return cudaErrorNotReady;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.0f;  // the emulator does not time anything
  return cudaSuccess;
}
