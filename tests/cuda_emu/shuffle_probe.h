// The emulator's own shuffle rules under test (device side; the expectations are in
// shuffle_rules.h, with the widths and arguments): every lane of a 64-thread block records what each of __shfl_sync,
// __shfl_up_sync, __shfl_down_sync and __shfl_xor_sync returns for several widths and lane
// arguments, and a 48-thread block (a partial second warp) shuffles with a given mask.
#pragma once
#include "shuffle_rules.h"

namespace emu_test {

// A lane's value: its block-wide thread index (so a read of another warp would show).
__global__ void shuffle_probe_kernel(int* out) {
  const int t = int(threadIdx.x), v = 1000 + t;
  int c = 0;
  for (int w : kShuffleWidths)
    for (int a : kShuffleArgs) {
      out[(c++) * 64 + t] = __shfl_sync(0xffffffffu, v, a, w);
      out[(c++) * 64 + t] = __shfl_up_sync(0xffffffffu, v, unsigned(a), w);
      out[(c++) * 64 + t] = __shfl_down_sync(0xffffffffu, v, unsigned(a), w);
      out[(c++) * 64 + t] = __shfl_xor_sync(0xffffffffu, v, a, w);
    }
}

// Warp 0 shuffles with the full mask, warp 1 (16 lanes) with `mask`.
__global__ void partial_warp_kernel(unsigned mask, double* out) {
  out[threadIdx.x] = __shfl_xor_sync(threadIdx.x < 32 ? 0xffffffffu : mask, double(threadIdx.x), 1);
}

void launch_shuffle_probe(int* out) { emu::launch(emu::config(1, 64), shuffle_probe_kernel, out); }
void launch_partial_warp(unsigned mask, double* out) {
  emu::launch(emu::config(1, 48), partial_warp_kernel, mask, out);
}

}  // namespace emu_test
