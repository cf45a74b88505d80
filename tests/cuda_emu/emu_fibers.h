// The emulator's scheduler (included by the stand-in cuda_runtime.h): one fiber per GPU
// thread (emu_context.h), blocks run one after another. Within a block the scheduler sweeps the threads in
// a fixed order (emu::order: forward or reverse, blocks too), running each until it reaches a
// collective (shuffle, __syncwarp, __syncthreads) or exits. A collective completes only when
// every live lane of the warp (every live thread of the block) waits at it; then the lanes
// exchange values and become runnable. So within one segment between collectives the lanes
// run in the sweep order, and a kernel whose lanes exchange values through memory without a
// sync gives different results in the two orders (the driver compares them bitwise).
#pragma once
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "emu_context.h"

namespace emu {

enum class Op { shfl_idx, shfl_up, shfl_down, shfl_xor, syncwarp, syncthreads };
enum class Order { forward, reverse };

inline Order order = Order::forward;        // the sweep order of threads and blocks
inline cudaError_t last_error = cudaSuccess;  // read (and cleared) by cudaGetLastError
inline std::vector<std::string> errors;     // rule violations found by the launches

struct Config {
  dim3 grid, block;
  size_t shmem;
  cudaStream_t stream;  // ignored: launches run to completion at once
};
// The rewritten `kernel<<<grid, block, shmem, stream>>>(args)` calls launch(config(...), ...).
inline Config config(dim3 grid, dim3 block, size_t shmem = 0, cudaStream_t stream = nullptr) {
  return {grid, block, shmem, stream};
}

namespace detail {
constexpr size_t kStack = 64 * 1024;  // per fiber; the kernels' frames are small
constexpr size_t kPage = 4096;

struct Thread {
  Context ctx;
  enum State { ready, waiting, exited } state;
  Op op;  // what a waiting thread waits at, with its operands:
  unsigned mask;
  int arg, width;
  uint64_t in, out;  // the value offered and the value received, as bits
  uint3 idx;
};

struct Scheduler {
  std::vector<Thread> threads;  // of the running block
  std::vector<char*> stacks;    // reused by every launch; a PROT_NONE page below each
  int current = -1;
  Context main;
  const std::function<void()>* body = nullptr;
  bool failed = false;
};
inline Scheduler sched;

inline const char* name(Op op) {
  static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                "__syncwarp", "__syncthreads"};
  return names[int(op)];
}

// Records a rule violation and abandons the launch (its fibers are never resumed).
inline void fail(const std::string& what) {
  errors.push_back("block " + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                   std::to_string(blockIdx.z) + ": " + what);
  sched.failed = true;
}

inline void entry() {
  (*sched.body)();
  Thread& t = sched.threads[sched.current];
  t.state = Thread::exited;
  switch_context(t.ctx, sched.main);  // never resumed
}

inline void run(int t) {
  sched.current = t;
  threadIdx = sched.threads[t].idx;
  switch_context(sched.main, sched.threads[t].ctx);
}

// The lane a shuffle reads, by PTX's shfl rules (c = ((32 − width) << 8) | clamp): a source
// outside the lane's width segment (up/down past its ends, xor into a later segment) gives the
// lane its own value; idx wraps modulo width within the segment.
inline int source_lane(Op op, int lane, int arg, int width) {
  const int b = arg & 31, seg = (32 - width) & 31, clamp = op == Op::shfl_up ? 0 : 31;
  const int max_lane = (lane & seg) | (clamp & ~seg), min_lane = lane & seg;
  int j = lane;
  bool ok = true;
  switch (op) {
    case Op::shfl_up: j = lane - b; ok = j >= max_lane; break;
    case Op::shfl_down: j = lane + b; ok = j <= max_lane; break;
    case Op::shfl_xor: j = lane ^ b; ok = j <= max_lane; break;
    case Op::shfl_idx: j = min_lane | (b & ~seg); ok = j <= max_lane; break;
    default: break;
  }
  return ok ? j : lane;
}

inline std::string lane_str(int lane, int warp) {
  return "lane " + std::to_string(lane) + " of warp " + std::to_string(warp);
}

// Completes warp w's collective if every live lane waits at it; false if it cannot yet.
inline bool resolve_warp(int w) {
  auto& th = sched.threads;
  const int base = w * 32, n = std::min<int>(32, int(th.size()) - base);
  unsigned live = 0, waiting = 0, at_barrier = 0;
  for (int l = 0; l < n; ++l) {
    const Thread& t = th[base + l];
    if (t.state == Thread::exited) continue;
    live |= 1u << l;
    if (t.state == Thread::ready) return false;
    (t.op == Op::syncthreads ? at_barrier : waiting) |= 1u << l;
  }
  if (!waiting) return false;
  if (at_barrier) return fail("warp " + std::to_string(w) + ": some lanes wait at __syncthreads, others at a warp collective"), false;
  const Thread& first = th[base + __builtin_ctz(waiting)];
  for (int l = 0; l < n; ++l) {
    const Thread& t = th[base + l];
    if (!(waiting >> l & 1)) continue;
    if (t.op != first.op || t.mask != first.mask || t.width != first.width)
      return fail(lane_str(l, w) + " is at " + name(t.op) + " while another lane is at " + name(first.op) +
                  " (or the masks/widths differ)"), false;
    if (t.width < 1 || t.width > 32 || (t.width & (t.width - 1)))
      return fail(lane_str(l, w) + ": width " + std::to_string(t.width) + " is not a power of 2 up to 32"), false;
    if (!(t.mask >> l & 1)) return fail(lane_str(l, w) + " calls " + name(t.op) + " with a mask without itself"), false;
  }
  for (int l = 0; l < 32; ++l)
    if ((first.mask >> l & 1) && !(live >> l & 1))
      return fail(std::string(name(first.op)) + " mask names " + lane_str(l, w) +
                  (l < n ? ", which has exited" : ", which does not exist (partial warp)")), false;
  for (int l = 0; l < n; ++l) {
    Thread& t = th[base + l];
    if (!(waiting >> l & 1)) continue;
    if (t.op != Op::syncwarp) {
      const int j = source_lane(t.op, l, t.arg, t.width);
      if (!(first.mask >> j & 1))
        return fail(lane_str(l, w) + " reads " + lane_str(j, w) + " in " + name(t.op) + ", which " +
                    (j < n ? "has exited" : "does not exist")), false;
      t.out = th[base + j].in;
    }
    t.state = Thread::ready;
  }
  return true;
}

// Releases __syncthreads once every live thread of the block waits there.
inline bool resolve_block() {
  bool any = false;
  for (const Thread& t : sched.threads) {
    if (t.state == Thread::exited) continue;
    if (t.state == Thread::ready || t.op != Op::syncthreads) return false;
    any = true;
  }
  for (Thread& t : sched.threads)
    if (t.state != Thread::exited) t.state = Thread::ready;
  return any;
}

inline void run_block(unsigned nthreads) {
  auto& th = sched.threads;
  th.assign(nthreads, Thread{});
  while (sched.stacks.size() < nthreads) {
    void* p = mmap(nullptr, kStack + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(p, kPage, PROT_NONE);  // a stack overflow faults instead of corrupting memory
    sched.stacks.push_back(static_cast<char*>(p) + kPage);
  }
  for (unsigned t = 0; t < nthreads; ++t) {
    th[t].state = Thread::ready;
    th[t].idx = {t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y)};
    make_context(th[t].ctx, sched.stacks[t], kStack, entry);
  }
  for (;;) {
    for (unsigned s = 0; s < nthreads && !sched.failed; ++s) {
      const unsigned t = order == Order::forward ? s : nthreads - 1 - s;
      if (th[t].state == Thread::ready) run(int(t));
    }
    for (unsigned w = 0; w * 32 < nthreads && !sched.failed; ++w) resolve_warp(int(w));
    if (sched.failed) return;
    resolve_block();
    bool live = false, ready = false;
    for (const Thread& t : th) live |= t.state != Thread::exited, ready |= t.state == Thread::ready;
    if (!live) return;
    if (!ready) return fail("deadlock: live threads wait at collectives that cannot complete");
  }
}
}  // namespace detail

// Lane mask of the caller's warp's threads that have not exited.
inline unsigned live_lanes() {
  const auto& th = detail::sched.threads;
  const int base = detail::sched.current / 32 * 32;
  unsigned m = 0;
  for (int l = 0; l < 32 && base + l < int(th.size()); ++l)
    if (th[base + l].state != detail::Thread::exited) m |= 1u << l;
  return m;
}

// A warp or block collective of the calling fiber: waits until the scheduler completes it.
template <class T>
T shuffle(Op op, unsigned mask, T var, int arg, int width) {
  static_assert(std::is_arithmetic_v<T> && sizeof(T) <= 8, "shuffles move one 32- or 64-bit value");
  detail::Thread& me = detail::sched.threads[detail::sched.current];
  me.op = op, me.mask = mask, me.arg = arg, me.width = width, me.in = 0;
  std::memcpy(&me.in, &var, sizeof(T));
  me.state = detail::Thread::waiting;
  detail::switch_context(me.ctx, detail::sched.main);
  T out;
  std::memcpy(&out, &me.out, sizeof(T));
  return out;
}

// Runs kernel(args...) on every thread of the grid, to completion; as on the device, an
// invalid configuration launches nothing and is reported by cudaGetLastError.
template <class... P, class... A>
void launch(const Config& c, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel argument count");
  const unsigned long threads = (unsigned long)c.block.x * c.block.y * c.block.z;
  if (!c.grid.x || !c.grid.y || !c.grid.z || !threads || threads > 1024 || c.block.z > 64 || c.grid.y > 65535 ||
      c.grid.z > 65535 || c.shmem > 48 * 1024) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(args)...);  // copied, as CUDA does
  const std::function<void()> body = [&] { std::apply(kernel, params); };
  auto& s = detail::sched;
  s.body = &body, s.failed = false, gridDim = c.grid, blockDim = c.block;
  const unsigned long blocks = (unsigned long)c.grid.x * c.grid.y * c.grid.z;
  for (unsigned long i = 0; i < blocks && !s.failed; ++i) {
    const unsigned long b = order == Order::forward ? i : blocks - 1 - i;
    blockIdx = {unsigned(b % c.grid.x), unsigned(b / c.grid.x % c.grid.y), unsigned(b / (c.grid.x * c.grid.y))};
    detail::run_block(unsigned(threads));
  }
  if (s.failed) last_error = cudaErrorLaunchFailure;
}

}  // namespace emu
