// Device-generic building blocks of the passes: row blocking, and the symmetric block sums
// that skip the half of the d×d result that is known. All products go to ATen
// (MKL/OpenBLAS on CPU, cuBLAS on CUDA); nothing here is per device.
#pragma once
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/tril.h>
#include <ATen/ops/zeros.h>
#include <algorithm>

namespace divaext {

// Rows per block: ~2M elements of x per block (8 MB in float32; 4096 rows at d = 512) keeps
// the block products at full BLAS speed (measured: the same GFLOP/s as 8192 or 16384 rows on
// CPU) while the block temporaries stay small, O(block·d).
inline int64_t block_rows_for(int64_t requested, int64_t n, int64_t d) {
  int64_t b = requested > 0 ? requested : std::clamp<int64_t>((int64_t{1} << 21) / std::max<int64_t>(d, 1), 256, 32768);
  return std::max<int64_t>(1, std::min(b, n));
}

// Column panels of a d×d operand. Computing only panels on or below the diagonal costs
// (1/2 + 1/(2P)) of the full product: P = 4 saves 37.5% of the flops (measured ~30% of the
// time on CPU at d = 512 with benchmarks/bench_derivative.py). Panels narrower than 128 columns lose more in
// BLAS efficiency than they save.
inline int64_t num_panels(int64_t d) { return std::clamp<int64_t>(d / 128, 1, 8); }

template <class F>
inline void for_each_panel(int64_t d, F&& f) {
  const int64_t P = num_panels(d), w = (d + P - 1) / P;
  for (int64_t s = 0; s < d; s += w) f(s, std::min(d, s + w));
}

// Accumulates Σ over blocks of xbᵀ xw (a symmetric d×d sum) in float64, computing only the
// column panels on or below the diagonal. float32 panels are written into a float32 scratch
// (always the same positions, so its upper blocks stay zero) and added to the float64 sum
// once per block: one contiguous conversion instead of a strided one per panel.
class GramAccumulator {
 public:
  GramAccumulator(int64_t d, const at::TensorOptions& like)
      : acc_(at::zeros({d, d}, like.dtype(at::kDouble))),
        scratch_(like.dtype() == at::kDouble ? at::Tensor() : at::zeros({d, d}, like)) {}

  void add(const at::Tensor& xb /*[b,d]*/, const at::Tensor& xw /*[b,d]*/) {
    const int64_t d = xb.size(1);
    for_each_panel(d, [&](int64_t s, int64_t e) {
      if (scratch_.defined()) {
        auto o = scratch_.slice(0, s).slice(1, s, e);
        at::mm_out(o, xb.slice(1, s).t(), xw.slice(1, s, e));
      } else {
        acc_.slice(0, s).slice(1, s, e).addmm_(xb.slice(1, s).t(), xw.slice(1, s, e));
      }
    });
    if (scratch_.defined()) acc_.add_(scratch_);
  }

  // The full symmetric sum: the lower triangle mirrored into the upper one.
  at::Tensor result() const { return at::tril(acc_) + at::tril(acc_, -1).t(); }

 private:
  at::Tensor acc_, scratch_;
};

}  // namespace divaext
