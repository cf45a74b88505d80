// Device-generic building blocks of the passes: row blocking, and matrix products that skip
// the half of a symmetric or triangular d×d operand that is known. All products go to ATen
// (MKL/OpenBLAS on CPU, cuBLAS on CUDA); nothing here is per device.
#pragma once
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/tril.h>
#include <algorithm>

namespace divaext {

// Rows per block: ~4M elements of x per block (16 MB in float32) keeps the block products
// large enough for full BLAS speed while the block temporaries stay O(block·d).
inline int64_t block_rows_for(int64_t requested, int64_t n, int64_t d) {
  int64_t b = requested > 0 ? requested : std::clamp<int64_t>((int64_t{1} << 22) / std::max<int64_t>(d, 1), 256, 32768);
  return std::max<int64_t>(1, std::min(b, n));
}

// Column panels of a d×d operand. Computing only panels on or below the diagonal costs
// (1/2 + 1/(2P)) of the full product: P = 4 saves 37.5% of the flops (measured ~30% of the
// time on CPU at d = 512, benchmarks/README.md). Panels narrower than 128 columns lose more in
// BLAS efficiency than they save.
inline int64_t num_panels(int64_t d) { return std::clamp<int64_t>(d / 128, 1, 8); }

template <class F>
inline void for_each_panel(int64_t d, F&& f) {
  const int64_t P = num_panels(d), w = (d + P - 1) / P;
  for (int64_t s = 0; s < d; s += w) f(s, std::min(d, s + w));
}

// acc [d,d] (float64) += lower-block-triangle of xbᵀ xw, xb and xw [b,d]. Only blocks on or
// below the diagonal are written; call symmetrize_lower() once all blocks are in.
inline void add_gram_lower(at::Tensor& acc, const at::Tensor& xb, const at::Tensor& xw) {
  const int64_t d = xb.size(1);
  for_each_panel(d, [&](int64_t s, int64_t e) {
    acc.slice(0, s).slice(1, s, e).add_(at::mm(xb.slice(1, s).t(), xw.slice(1, s, e)));
  });
}

// Mirror the lower triangle into the upper one.
inline at::Tensor symmetrize_lower(const at::Tensor& acc) {
  return at::tril(acc) + at::tril(acc, -1).t();
}

// out [b,d] = xb [b,d] @ t [d,d] for t upper (upper=true) or lower triangular, touching only
// the nonzero part of t, panel by panel. out must not alias xb.
inline void tri_mm_out(at::Tensor& out, const at::Tensor& xb, const at::Tensor& t, bool upper) {
  const int64_t d = xb.size(1);
  for_each_panel(d, [&](int64_t s, int64_t e) {
    auto o = out.slice(1, s, e);
    if (upper) at::mm_out(o, xb.slice(1, 0, e), t.slice(0, 0, e).slice(1, s, e));
    else at::mm_out(o, xb.slice(1, s), t.slice(0, s).slice(1, s, e));
  });
}

}  // namespace divaext
