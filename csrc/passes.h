// The streaming passes of the dataset derivative, written once for every device.
//
// Each op walks X in row blocks: block products go to ATen (so to MKL/cuBLAS), the per-row
// work of a block goes to the device's fused row kernels, given as the policy `K`
// (cpu/row_kernels.h, cuda/row_kernels.cuh). Targets are class indices [n] int64 or a matrix
// [n,k] (targets.h); half-precision features are converted to float32 block by block
// (pass_inputs.h rows_of). Extra memory of the passes of loo_derivative / val_derivative is
// O(n + d² + d·k + block·(d + k)): per-row scalars, float64 d×d / d×k accumulators, and one
// block's temporaries; only loo_rows / vjp_gram / vjp_rows (loo_predictions) have [n,k]
// inputs or outputs. Nothing n×n, and no second n×d copy of X (a non-contiguous X is read
// through strided block views).
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <cmath>
#include <tuple>

#include "blocking.h"
#include "checks.h"
#include "backward_passes.h"
#include "pass_inputs.h"

namespace divaext {

using at::Tensor;

namespace detail {
// Pass 1 over the blocks of x: M = Xᵀ diag(a) X, with add_b(s, e, xa) adding the block's share
// of B (xa = diag(a) x of rows [s, e)); raises on NaN/Inf features or an overflow of M or B.
template <class AddB>
Tensor gram_sums(const Tensor& x, const Tensor& a, int64_t block_rows, const Tensor& B, AddB&& add_b) {
  const int64_t n = x.size(0), d = x.size(1);
  check_like(a, x, "weights", {n});
  GramAccumulator M(d, compute_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto xb = rows_of(x, s, e);
    auto xa = xb * a.slice(0, s, e).unsqueeze(1);  // [b,d]
    M.add(xb, xa);
    add_b(s, e, xa);
  }
  auto Ms = M.result();
  // A NaN/Inf anywhere in x reaches M (0·Inf is NaN too, so zero-weight rows count): one cheap
  // d×d test instead of an n×d mask, and a block scan only to name the row.
  if (!at::isfinite(Ms).all().item<bool>() || !at::isfinite(B).all().item<bool>()) {
    const int64_t row = first_nonfinite_row(x, blk);
    TORCH_CHECK_VALUE(row < 0, "divaext: features contain NaN or Inf (first at row ", row, ")");
    TORCH_CHECK_VALUE(false, "divaext: Xᵀ diag(weights) X overflowed: features or weights are too large "
                      "for ", x.scalar_type(), "; rescale them");
  }
  return Ms;
}
}  // namespace detail

// Pass 1: M = Xᵀ diag(a) X [d,d], B = Xᵀ diag(a) Y [d,k], accumulated in float64 across blocks.
template <class K>
std::tuple<Tensor, Tensor> gram(const Tensor& x, const Tensor& a, const Tensor& y, int64_t block_rows) {
  check_features(x);
  TORCH_CHECK_VALUE(y.dim() == 2, "divaext: targets must be 2-D [n, k], got shape ", y.sizes(),
                    y.dim() == 1 ? " (class indices go to gram_labels)" : "");
  const int64_t k = check_targets(y, x, 0);
  auto B = at::zeros({x.size(1), k}, detail::f64_on(x));
  auto M = detail::gram_sums(x, a, block_rows, B, [&](int64_t s, int64_t e, const Tensor& xa) {
    B.add_(at::mm(xa.t(), y.slice(0, s, e)));
  });
  return {M, B};
}

// Pass 1 with class indices: B = Xᵀ diag(a) onehot(labels) is a scatter of the weighted rows
// into B's columns (n·d work, not the n·d·k of a product with one-hot targets), added in
// float64 by the device (K::scatter_rows: deterministic, the same sum from run to run).
// Accumulated as Bᵀ [k,d], whose rows are contiguous.
template <class K>
std::tuple<Tensor, Tensor> gram_labels(const Tensor& x, const Tensor& a, const Tensor& labels, int64_t num_classes,
                                       int64_t block_rows) {
  check_features(x);
  TORCH_CHECK_VALUE(labels.dim() == 1 && labels.scalar_type() == at::kLong,
                    "divaext: labels must be int64 class indices [n], got ", labels.scalar_type(), " of shape ",
                    labels.sizes());
  check_targets(labels, x, num_classes);
  const auto lc = labels.contiguous();
  auto Bt = at::zeros({num_classes, x.size(1)}, detail::f64_on(x));
  auto M = detail::gram_sums(x, a, block_rows, Bt, [&](int64_t s, int64_t e, const Tensor& xa) {
    K::scatter_rows(xa.contiguous(), lc.slice(0, s, e), Bt);
  });
  return {M, Bt.t().contiguous()};
}

// Pass 2: whitened rows z = x t, h = |z|², ŷ = z v, f = (ŷ − a h y) / (1 − a h).
template <class K>
std::tuple<Tensor, Tensor> loo_rows(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& t,
                                    const Tensor& v, double min_denominator, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y, v.size(-1)), n = x.size(0), d = x.size(1);
  check_like(a, x, "weights", {n});
  detail::check_factor(x, t, v, k);
  const auto tt = t.to(compute_type(x)), vv = v.to(compute_type(x));
  const auto yc = y.contiguous(), ac = a.contiguous();
  auto f = at::empty({n, k}, detail::compute_on(x));
  auto h = at::empty({n}, detail::compute_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto z = at::empty({blk, d}, detail::compute_on(x));
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto zb = z.slice(0, 0, e - s);
    at::mm_out(zb, detail::rows_of(x, s, e), tt);  // t is upper triangular; one full GEMM beats panels
    auto yhat = at::mm(zb, vv);  // [b,k]
    K::loo_rows(zb, yhat, yc.slice(0, s, e), ac.slice(0, s, e), f.slice(0, s, e), h.slice(0, s, e));
  }
  detail::check_denominators(ac, h, min_denominator);
  return {f, h};
}

// Per-row loss and its gradient; loss summed in float64.
template <class K>
std::tuple<Tensor, Tensor> loss_grad(const Tensor& f, const Tensor& y, const Tensor& w, int64_t kind) {
  check_float_matrix(f, "predictions");
  check_like(y, f, "targets", f.sizes());
  check_like(w, f, "loss weights", {f.size(0)});
  check_loss(kind, f.size(1));
  const auto fc = f.contiguous(), yc = y.contiguous(), wc = w.contiguous();
  auto g = at::empty_like(fc);
  auto rows = at::empty({f.size(0)}, detail::f64_on(f));
  K::loss_grad(fc, yc, wc, kind, g, rows);
  return std::make_tuple(rows.sum(), g);
}

// Unweighted per-row losses of G predictions per target row (e.g. one per candidate λ):
// f [n,G,k], y [n,k] → [n,G] float64, loss[i, j] = ℓ(f[i, j], y[i]). No gradient is formed.
template <class K>
Tensor loss_rows(const Tensor& f, const Tensor& y, int64_t kind) {
  TORCH_CHECK_VALUE(f.dim() == 3, "divaext: predictions must be 3-D [n, G, k], got shape ", f.sizes());
  TORCH_CHECK_TYPE(f.scalar_type() == at::kFloat || f.scalar_type() == at::kDouble,
                   "divaext: predictions must be float32 or float64, got ", f.scalar_type());
  check_like(y, f, "targets", {f.size(0), f.size(2)});
  check_loss(kind, f.size(2));
  auto rows = at::empty({f.size(0), f.size(1)}, detail::f64_on(f));
  K::loss_rows(f.contiguous(), y.contiguous(), kind, rows);
  return rows;
}


// Passes 2 + A fused, for a loss known up front (loo_derivative): per block, whitened rows
// z = x t give f, h and the loss gradient g = w ∂ℓ/∂f row by row, and the backward sums are
// accumulated from the same z: C̃ = Zᵀ diag(c) Z [d,d] and P̃ = Zᵀ U [d,k] (float64), with
// c = a (g·e)/D, U = g/D. Summing in whitened coordinates keeps every term O(h) in size:
// their rounding does not grow with the conditioning of M (forming S C S explicitly does).
// f and g live one block at a time (pass B recomputes what it needs of f: vjp_fit). Returns
// h [n], ge [n] = g·e (all pass B needs of g), Σ w ℓ (float64 0-d), C̃, P̃, and
// max_i |y_i − ŷ_i| (float64 0-d, NaN if one is NaN; 0 without rows), the residual scale of
// the gradient's accuracy estimate (engine/accuracy.py), formed from the fit ŷ = z v that
// the pass has anyway instead of by another read of X.
template <class K>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> loo_grad(
    const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& w, const Tensor& t, const Tensor& v,
    int64_t kind, double min_denominator, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y, v.size(-1)), n = x.size(0), d = x.size(1);
  check_like(a, x, "weights", {n});
  check_like(w, x, "loss weights", {n});
  detail::check_factor(x, t, v, k);
  check_loss(kind, k);
  const auto vv = v.to(compute_type(x));
  const auto yc = y.contiguous(), ac = a.contiguous(), wc = w.contiguous();
  auto h = at::empty({n}, detail::compute_on(x)), ge = at::empty({n}, detail::compute_on(x));
  auto loss = at::empty({n}, detail::f64_on(x)), resid = at::empty({n}, detail::compute_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto f = at::empty({blk, k}, detail::compute_on(x)), g = at::empty({blk, k}, detail::compute_on(x));
  auto [Ct, Pt] = detail::whitened_sums(x, t, k, block_rows, [&](int64_t s, int64_t e, Tensor& zb, Tensor& cb,
                                                                     Tensor& ub) {
    K::loo_grad(zb, at::mm(zb, vv), yc.slice(0, s, e), ac.slice(0, s, e), wc.slice(0, s, e), kind,
                f.slice(0, 0, e - s), h.slice(0, s, e), g.slice(0, 0, e - s), loss.slice(0, s, e), cb, ub,
                ge.slice(0, s, e), resid.slice(0, s, e));
  });
  detail::check_denominators(ac, h, min_denominator);
  auto resid_max = n ? resid.max().to(at::kDouble) : at::zeros({}, detail::f64_on(x));  // max propagates NaN
  return std::make_tuple(h, ge, loss.sum(), Ct, Pt, resid_max);
}

// Registers the generic passes with a device's row kernels (called from */register.cpp).
#define DIVAEXT_REGISTER_PASSES(m, K)                      \
  do {                                                     \
    (m).impl("gram", &::divaext::gram<K>);                 \
    (m).impl("gram_labels", &::divaext::gram_labels<K>);   \
    (m).impl("loo_rows", &::divaext::loo_rows<K>);         \
    (m).impl("loss_grad", &::divaext::loss_grad<K>);       \
    (m).impl("loss_rows", &::divaext::loss_rows<K>);       \
    (m).impl("loo_grad", &::divaext::loo_grad<K>);         \
    (m).impl("vjp_gram", &::divaext::vjp_gram<K>);         \
    (m).impl("vjp_rows", &::divaext::vjp_rows<K>);         \
    (m).impl("vjp_fit", &::divaext::vjp_fit<K>);           \
    (m).impl("val_rows", &::divaext::val_rows<K>);         \
  } while (0)

}  // namespace divaext
