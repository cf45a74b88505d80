// The CUDA row reducer (row_reducer.h): one warp per row. Lane l walks the row's values
// l, l + 32, …, so a warp's reads of a contiguous row are coalesced; sums are accumulated
// per lane in double and combined with shuffles, so every lane ends with the total.
#pragma once
#include <cfloat>
#include <climits>

#include "row_reducer.h"

namespace divaext::cuda {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;  // 256 threads, 8 rows per block
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <int N>
__device__ __forceinline__ rows::Sums<N> warp_sum(rows::Sums<N> s) {
  for (int m = 0; m < N; ++m) s.v[m] = warp_sum(s.v[m]);
  return s;
}

// First index of the maximum (ties → smaller index), like torch.argmax and the CPU kernels.
__device__ __forceinline__ void warp_argmax(double& v, int& i) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(kFull, v, o);
    const int oi = __shfl_xor_sync(kFull, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
}

struct WarpRow {
  int lane;

  // The row of this warp (blocks of kWarpsPerBlock rows), and this thread's lane in it.
  __device__ __forceinline__ long row() {
    lane = threadIdx.x % kWarp;
    return long(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  }

  template <class F>
  __device__ __forceinline__ void each(long n, F&& body) const {
    for (long j = lane; j < n; j += kWarp) body(j);
  }
  template <class F>
  __device__ __forceinline__ auto sum(long n, F&& term) const {
    decltype(term(0L)) s{};
    for (long j = lane; j < n; j += kWarp) s += term(j);
    return warp_sum(s);
  }
  template <typename T>
  __device__ __forceinline__ rows::ArgMax argmax(const T* p, long n) const {
    double v = -DBL_MAX;
    int i = INT_MAX;
    for (long c = lane; c < n; c += kWarp)
      if (double(p[c]) > v) { v = double(p[c]); i = int(c); }
    warp_argmax(v, i);
    return {v, long(i)};
  }
  template <typename T, typename V>
  __device__ __forceinline__ void put(T* p, V v) const {
    if (lane == 0) *p = v;
  }
  // The lanes of a row re-read global memory other lanes of it wrote (f, g in the fused pass).
  __device__ __forceinline__ void sync() const { __syncwarp(); }
};

inline unsigned grid_for(long b) { return unsigned((b + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace divaext::cuda
