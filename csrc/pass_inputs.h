// What every pass of passes.h does with its inputs before and around the row kernels: the
// checks shared by several passes, the compute dtype of a block, and the one check of a pass's
// result (1 − a h > min_denominator). Device-generic: ATen only.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/nonzero.h>
#include <cmath>

#include "checks.h"

namespace divaext::detail {

using at::Tensor;

inline at::TensorOptions f64_on(const Tensor& x) { return x.options().dtype(at::kDouble); }

// Options of the per-row outputs and block temporaries: the features' compute dtype.
inline at::TensorOptions compute_on(const Tensor& x) { return x.options().dtype(compute_type(x)); }

// Rows [s, e) of x as the block products read them: a view, converted to float32 for
// half-precision features (one block at a time, so never a float32 copy of all of X).
inline Tensor rows_of(const Tensor& x, int64_t s, int64_t e) {
  auto xb = x.slice(0, s, e);
  return xb.scalar_type() == compute_type(x) ? xb : xb.to(compute_type(x));
}

// Index of the first row of x holding NaN/Inf, or -1. Walks blocks so it needs no n×d mask.
inline int64_t first_nonfinite_row(const Tensor& x, int64_t block) {
  const int64_t n = x.size(0);
  for (int64_t s = 0; s < n; s += block) {
    auto ok = at::isfinite(x.slice(0, s, std::min(n, s + block))).all(1);
    if (!ok.all().item<bool>()) return s + (~ok).nonzero().select(1, 0)[0].item<int64_t>();
  }
  return -1;
}

// The Cholesky factor of the forward passes: t [d,d] and v [d,k], float64.
inline void check_factor(const Tensor& x, const Tensor& t, const Tensor& v, int64_t k) {
  check_f64(t, x, "t (inverse Cholesky factor)", {x.size(1), x.size(1)});
  check_f64(v, x, "v (whitened ridge weights)", {x.size(1), k});
}

// Features x and targets y (class indices [n], with k from `k_else`, or [n,k]); returns k.
inline int64_t check_features_targets(const Tensor& x, const Tensor& y, int64_t k_else) {
  check_features(x);
  return check_targets(y, x, k_else);
}

// Shared checks of the per-row inputs of the backward passes that read f [n,k]; returns k.
inline int64_t check_rows(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& f, const Tensor& h) {
  check_features(x);
  TORCH_CHECK_VALUE(f.dim() == 2, "divaext: predictions must be 2-D [n, k], got shape ", f.sizes());
  const int64_t n = x.size(0), k = check_targets(y, x, f.size(1));
  check_like(a, x, "weights", {n});
  check_like(f, x, "predictions", {n, k});
  check_like(h, x, "leverages", {n});
  return k;
}

// Raise if some row has 1 − a h <= min_denominator: the LOO prediction is then undefined
// (cannot happen in exact arithmetic for lam > 0; near 0 the prediction has lost its digits to
// cancellation). One n-vector test, then name the first such row.
// Written as "not greater than" so that NaN (an overflow in x's dtype) fails it too.
inline void check_denominators(const Tensor& a, const Tensor& h, double min_denominator) {
  auto bad = (1 - a * h).gt(min_denominator).logical_not_();
  if (!bad.any().item<bool>()) return;
  const int64_t i = bad.nonzero().select(1, 0)[0].item<int64_t>();
  const double hi = h[i].item<double>();
  TORCH_CHECK_VALUE(std::isfinite(hi), "divaext: the leverage of sample ", i, " is not finite (", hi, ") in ",
                    h.scalar_type(), ": (Xᵀ diag(weights) X + lam·I)⁻¹ overflows this dtype (lam too small for "
                    "the scale of the features, e.g. an all-zero feature column); increase lam or use float64");
  const double ah = (a[i] * h[i]).item<double>();
  TORCH_CHECK_VALUE(false, "divaext: the leave-one-out prediction of sample ", i,
                    " is undefined: 1 - a_i*h_i = ", 1.0 - ah, " <= ", min_denominator,
                    " (the sample dominates its own fit; increase lam or lower its weight)");
}

}  // namespace divaext::detail
