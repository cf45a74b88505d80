// The emulator checked against CUDA's documented shuffle rules (CUDA C++ Programming Guide,
// warp shuffle functions), written here from the documentation rather than from PTX as
// emu_fibers.h does: lanes form segments of `width`; __shfl_sync reads lane arg mod width of
// the caller's segment; up/down read lane ∓ delta, or the caller's own value when that falls
// outside its segment; xor reads lane ^ mask, or the own value when that is in a later
// segment. A partial warp (48 threads: the second warp has 16 lanes) may shuffle with a mask
// of its lanes; a mask naming a lane that does not exist is an emulator error.
#pragma once
#include <string>
#include <vector>

namespace emu_test {

constexpr int kShuffleWidths[] = {32, 16, 8, 1};
constexpr int kShuffleArgs[] = {0, 1, 3, 17, 31};
constexpr int kShuffleCases = 4 * 4 * 5;  // op × width × argument

// The probe kernels' launchers (shuffle_probe.h, compiled with the device code).
void launch_shuffle_probe(int* out);
void launch_partial_warp(unsigned mask, double* out);

inline int documented_source(int op, int lane, int a, int w) {
  const int seg = lane / w * w, in = lane % w;
  switch (op) {
    case 0: return seg + a % w;
    case 1: return in >= a ? lane - a : lane;
    case 2: return in + a < w ? lane + a : lane;
    default: return (lane ^ a) / w <= lane / w ? lane ^ a : lane;
  }
}

inline std::vector<std::string> check_shuffle_rules() {
  static const char* ops[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
  std::vector<std::string> bad;
  std::vector<int> out(kShuffleCases * 64, -1);
  emu::errors.clear();
  launch_shuffle_probe(out.data());
  bad = emu::errors;
  for (int c = 0, wi = 0; wi < 4; ++wi)
    for (int a : kShuffleArgs)
      for (int op = 0; op < 4; ++op, ++c)
        for (int t = 0; t < 64; ++t) {
          const int w = kShuffleWidths[wi], want = 1000 + t / 32 * 32 + documented_source(op, t % 32, a, w);
          if (out[c * 64 + t] != want && bad.size() < 8)
            bad.push_back(std::string(ops[op]) + " width " + std::to_string(w) + " arg " + std::to_string(a) + " lane " +
                          std::to_string(t) + ": got " + std::to_string(out[c * 64 + t]) + ", documented " +
                          std::to_string(want));
        }
  std::vector<double> partial(48, -1);
  emu::errors.clear();
  launch_partial_warp(0xffffu, partial.data());  // the 16 lanes of warp 1: legal
  for (int t = 0; t < 48; ++t)
    if (partial[t] != double(t ^ 1)) bad.push_back("partial warp: lane " + std::to_string(t) + " got " + std::to_string(partial[t]));
  for (const std::string& e : emu::errors) bad.push_back("partial warp with its mask: " + e);
  emu::errors.clear();
  launch_partial_warp(0xffffffffu, partial.data());  // names 16 lanes of warp 1 that do not exist
  if (emu::errors.empty() || emu::errors[0].find("does not exist") == std::string::npos)
    bad.push_back("a mask naming lanes of a partial warp that do not exist was not reported");
  emu::errors.clear();
  (void)cudaGetLastError();
  return bad;
}

}  // namespace emu_test
