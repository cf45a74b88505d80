// What the per-row formulas (row_math.h, losses.h) need of a device: a "row reducer" that
// spreads one row's loops over the workers given to that row. The CPU gives a row one thread
// (SerialRow, cpu/serial_row.h); CUDA gives it the 32 lanes of a warp (WarpRow,
// cuda/warp_row.cuh). A reducer R offers, for one row:
//   r.each(n, body)   body(j) for every j in [0, n), each j run by exactly one worker;
//   r.sum(n, term)    Σ_j term(j) accumulated in double (term returns double or Sums<N>), the
//                     total returned to every worker; term may also write index j of an output;
//   r.amax(n, term)   max_j |term(j)| in double (0 for n = 0; NaN if any term is NaN: max_nan),
//                     returned to every worker;
//   r.argmax(p, n)    ArgMax of p[0, n) under the order of ArgMax::take (torch.argmax's: NaN
//                     is the maximum, ties go to the smaller index), returned to every worker;
//   r.put(p, v)       *p = v by one worker (the row's scalar outputs);
//   r.sync()          makes this row's writes visible to its workers before they re-read them.
// Torch-free and host/device inline, so nvcc compiles it without torch.
#pragma once

#if defined(__CUDACC__)
#define DIVAEXT_HD __host__ __device__ __forceinline__
#else
#define DIVAEXT_HD inline
#endif

namespace divaext::rows {

// N sums taken in one sweep over a row (e.g. Σy, Σy·f and Σexp(f − max) of cross-entropy).
template <int N>
struct Sums {
  double v[N];
  DIVAEXT_HD Sums& operator+=(const Sums& o) {
    for (int m = 0; m < N; ++m) v[m] += o.v[m];
    return *this;
  }
  DIVAEXT_HD double operator[](int m) const { return v[m]; }
};

// The larger of a running max m and a new value v, NaN once either is NaN: unlike fmax (which
// drops a NaN), a NaN anywhere in a row reaches the row's max whatever order the CPU's loop or
// CUDA's butterfly meets the values in, so both devices agree (up to the NaN's payload).
DIVAEXT_HD double max_nan(double m, double v) { return (v > m || v != v) ? v : m; }

// |v| in double, host/device alike (−0 → −0, which never beats a running +0; NaN stays NaN).
DIVAEXT_HD double magnitude(double v) { return v < 0 ? -v : v; }

// The largest (value, index) seen so far. One order for every device, so the CPU's serial loop
// and CUDA's lanes and butterfly (which meet the elements in other orders) agree on any row:
// torch.argmax's rule, NaN is the maximum (the first NaN wins), otherwise the largest value,
// ties (−0 == +0, −inf == −inf) to the smaller index; so an all −inf row gives index 0.
// It is a strict total order on (value, index) with distinct indices, so the result does not
// depend on the order in which the elements are taken.
struct ArgMax {
  double value;
  long index;  // kNone: no element taken yet (a lane with no column of the row)

  static constexpr long kNone = -1;
  // Loses to every element, −inf and NaN included (no value is neutral, so the index says it).
  DIVAEXT_HD static ArgMax none() { return {0.0, kNone}; }

  // Whether element (v, i) beats the current one. v != v: NaN (isnan is not host/device alike).
  DIVAEXT_HD bool beaten_by(double v, long i) const {
    if (i == kNone) return false;
    if (index == kNone) return true;
    const bool v_nan = v != v, cur_nan = value != value;
    if (v_nan || cur_nan) return v_nan && (!cur_nan || i < index);
    return v > value || (v == value && i < index);
  }
  DIVAEXT_HD void take(double v, long i) {
    if (beaten_by(v, i)) *this = {v, i};
  }
};

// An output a caller does not want (the loss gradient of the loss_rows op): `g[c] = v` on it
// is dropped, so each loss formula is written once for both uses.
struct Discard {
  struct Slot {
    template <class V>
    DIVAEXT_HD void operator=(const V&) const {}
  };
  DIVAEXT_HD Slot operator[](long) const { return {}; }
};

}  // namespace divaext::rows
