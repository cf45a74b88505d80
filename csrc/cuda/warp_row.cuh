// The CUDA row reducer (row_reducer.h): one warp per row. Lane l walks the row's values
// l, l + 32, …, so a warp's reads of a contiguous row are coalesced; sums are accumulated
// per lane in double and combined with shuffles, so every lane ends with the total.
#pragma once
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

// The lanes' running maxima combined under max_nan (row_reducer.h): every lane ends with the
// row's max, NaN if any lane holds one.
__device__ __forceinline__ double warp_max(double v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v = rows::max_nan(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Combines the lanes' ArgMax under the order of ArgMax::take (row_reducer.h), the CPU's too.
// Every lane takes part in every step (a lane with no column holds ArgMax::none()), and the
// order is total, so every lane ends with the same winner.
__device__ __forceinline__ void warp_argmax(rows::ArgMax& m) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(kFull, m.value, o);
    const long oi = __shfl_xor_sync(kFull, m.index, o);
    m.take(ov, oi);
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
  template <class F>
  __device__ __forceinline__ double amax(long n, F&& term) const {
    double m = 0.0;
    for (long j = lane; j < n; j += kWarp) m = rows::max_nan(m, rows::magnitude(term(j)));
    return warp_max(m);
  }
  template <typename T>
  __device__ __forceinline__ rows::ArgMax argmax(const T* p, long n) const {
    rows::ArgMax m = rows::ArgMax::none();
    for (long c = lane; c < n; c += kWarp) m.take(double(p[c]), c);
    warp_argmax(m);
    return m;
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
