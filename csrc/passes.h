// The streaming passes of the dataset derivative, written once for every device.
//
// Each op walks X in row blocks: block products go to ATen (so to MKL/cuBLAS), the per-row
// work of a block goes to the device's fused row kernels, given as the policy `K`
// (cpu/row_kernels.h, cuda/row_kernels.cuh). Extra memory is O(n·k + d² + block·d): per-row
// outputs, float64 d×d / d×k accumulators, and one block's temporaries. Nothing n×n, and no
// second n×d copy of X (a non-contiguous X is read through strided block views).
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

namespace divaext {

using at::Tensor;

namespace detail {
inline at::TensorOptions f64_on(const Tensor& x) { return x.options().dtype(at::kDouble); }

// Index of the first row of x holding NaN/Inf, or -1. Walks blocks so it needs no n×d mask.
inline int64_t first_nonfinite_row(const Tensor& x, int64_t block) {
  const int64_t n = x.size(0);
  for (int64_t s = 0; s < n; s += block) {
    auto ok = at::isfinite(x.slice(0, s, std::min(n, s + block))).all(1);
    if (!ok.all().item<bool>()) return s + (~ok).nonzero().select(1, 0)[0].item<int64_t>();
  }
  return -1;
}
}  // namespace detail

namespace detail {
// x [n,d] features and y [n,k] targets like them (every pass reads both); returns k.
inline int64_t check_features_targets(const Tensor& x, const Tensor& y) {
  check_float_matrix(x, "features");
  TORCH_CHECK_VALUE(y.dim() == 2, "divaext: targets must be 2-D [n, k], got shape ", y.sizes());
  check_like(y, x, "targets", {x.size(0), y.size(1)});
  return y.size(1);
}

// The Cholesky factor of the forward passes: t [d,d] and v [d,k], float64.
inline void check_factor(const Tensor& x, const Tensor& t, const Tensor& v, int64_t k) {
  check_f64(t, x, "t (inverse Cholesky factor)", {x.size(1), x.size(1)});
  check_f64(v, x, "v (whitened ridge weights)", {x.size(1), k});
}

// Shared checks of the per-row inputs of the backward passes.
inline void check_rows(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& f, const Tensor& h) {
  const int64_t n = x.size(0), k = detail::check_features_targets(x, y);
  check_like(a, x, "weights", {n});
  check_like(f, x, "predictions", {n, k});
  check_like(h, x, "leverages", {n});
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
}  // namespace detail

// Pass 1: M = Xᵀ diag(a) X [d,d], B = Xᵀ diag(a) Y [d,k], accumulated in float64 across blocks.
template <class K>
std::tuple<Tensor, Tensor> gram(const Tensor& x, const Tensor& a, const Tensor& y, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y), n = x.size(0), d = x.size(1);
  check_like(a, x, "weights", {n});
  GramAccumulator M(d, x.options());
  auto B = at::zeros({d, k}, detail::f64_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto xb = x.slice(0, s, e);
    auto xa = xb * a.slice(0, s, e).unsqueeze(1);  // [b,d]
    M.add(xb, xa);
    B.add_(at::mm(xa.t(), y.slice(0, s, e)));
  }
  auto Ms = M.result();
  // A NaN/Inf anywhere in x reaches M (0·Inf is NaN too, so zero-weight rows count): one cheap
  // d×d test instead of an n×d mask, and a block scan only to name the row.
  if (!at::isfinite(Ms).all().item<bool>() || !at::isfinite(B).all().item<bool>()) {
    const int64_t row = detail::first_nonfinite_row(x, blk);
    TORCH_CHECK_VALUE(row < 0, "divaext: features contain NaN or Inf (first at row ", row, ")");
    TORCH_CHECK_VALUE(false, "divaext: Xᵀ diag(weights) X overflowed: features or weights are too large "
                      "for ", x.scalar_type(), "; rescale them");
  }
  return {Ms, B};
}

// Pass 2: whitened rows z = x t, h = |z|², ŷ = z v, f = (ŷ − a h y) / (1 − a h).
template <class K>
std::tuple<Tensor, Tensor> loo_rows(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& t,
                                    const Tensor& v, double min_denominator, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y), n = x.size(0), d = x.size(1);
  check_like(a, x, "weights", {n});
  detail::check_factor(x, t, v, k);
  const auto tt = t.to(x.scalar_type()), vv = v.to(x.scalar_type());
  const auto yc = y.contiguous(), ac = a.contiguous();
  auto f = at::empty({n, k}, x.options());
  auto h = at::empty({n}, x.options());
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto z = at::empty({blk, d}, x.options());
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto zb = z.slice(0, 0, e - s);
    at::mm_out(zb, x.slice(0, s, e), tt);  // t is upper triangular; one full GEMM beats panels
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


namespace detail {
// The loop shared by the backward-A passes: walk x in blocks, whiten each (z = x t, one full
// GEMM: t is upper triangular but panels measured slower), let `rows(s, e, z, c, U)` fill c [b]
// and U [b,k] for rows [s, e), and accumulate C̃ = Zᵀ diag(c) Z and P̃ = Zᵀ U in float64.
template <class Rows>
std::tuple<Tensor, Tensor> whitened_sums(const Tensor& x, const Tensor& t, int64_t k, int64_t block_rows,
                                         Rows&& rows) {
  const int64_t n = x.size(0), d = x.size(1);
  const auto tt = t.to(x.scalar_type());
  GramAccumulator Ct(d, x.options());
  auto Pt = at::zeros({d, k}, f64_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto z = at::empty({blk, d}, x.options()), c = at::empty({blk}, x.options()), u = at::empty({blk, k}, x.options());
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto zb = z.slice(0, 0, e - s), cb = c.slice(0, 0, e - s), ub = u.slice(0, 0, e - s);
    at::mm_out(zb, x.slice(0, s, e), tt);
    rows(s, e, zb, cb, ub);
    Ct.add(zb, zb * cb.unsqueeze(1));
    Pt.add_(at::mm(zb.t(), ub));
  }
  return {Ct.result(), Pt};
}
}  // namespace detail

// Passes 2 + A fused, for a loss known up front (loo_derivative): per block, whitened rows
// z = x t give f, h and the loss gradient g = w ∂ℓ/∂f row by row, and the backward sums are
// accumulated from the same z: C̃ = Zᵀ diag(c) Z [d,d] and P̃ = Zᵀ U [d,k] (float64), with
// c = a (g·e)/D, U = g/D. Summing in whitened coordinates keeps every term O(h) in size:
// their rounding does not grow with the conditioning of M (forming S C S explicitly does).
// Returns f [n,k], h [n], ge [n] = g·e (all backward pass B needs of g), Σ w ℓ (float64 0-d),
// C̃, P̃.
template <class K>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> loo_grad(
    const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& w, const Tensor& t, const Tensor& v,
    int64_t kind, double min_denominator, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y), n = x.size(0), d = x.size(1);
  check_like(a, x, "weights", {n});
  check_like(w, x, "loss weights", {n});
  detail::check_factor(x, t, v, k);
  check_loss(kind, k);
  const auto vv = v.to(x.scalar_type());
  const auto yc = y.contiguous(), ac = a.contiguous(), wc = w.contiguous();
  auto f = at::empty({n, k}, x.options());
  auto h = at::empty({n}, x.options()), ge = at::empty({n}, x.options());
  auto loss = at::empty({n}, detail::f64_on(x));
  auto g = at::empty({block_rows_for(block_rows, n, d), k}, x.options());  // lives one block at a time
  auto [Ct, Pt] = detail::whitened_sums(x, t, k, block_rows, [&](int64_t s, int64_t e, Tensor& zb, Tensor& cb,
                                                                     Tensor& ub) {
    K::loo_grad(zb, at::mm(zb, vv), yc.slice(0, s, e), ac.slice(0, s, e), wc.slice(0, s, e), kind,
                f.slice(0, s, e), h.slice(0, s, e), g.slice(0, 0, e - s), loss.slice(0, s, e), cb, ub,
                ge.slice(0, s, e));
  });
  detail::check_denominators(ac, h, min_denominator);
  return std::make_tuple(f, h, ge, loss.sum(), Ct, Pt);
}

// Backward pass A alone (for an upstream gradient g known only after the forward, e.g.
// autograd through loo_predictions): C̃ = Zᵀ diag(c) Z and P̃ = Zᵀ U as in loo_grad, and
// ge = g·e [n] for pass B.
template <class K>
std::tuple<Tensor, Tensor, Tensor> vjp_gram(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& f,
                                            const Tensor& h, const Tensor& g, const Tensor& t, int64_t block_rows) {
  detail::check_rows(x, y, a, f, h);
  check_like(g, x, "grad_predictions", {x.size(0), y.size(1)});
  const int64_t n = x.size(0), d = x.size(1), k = y.size(1);
  check_f64(t, x, "t (inverse Cholesky factor)", {d, d});
  const auto yc = y.contiguous(), ac = a.contiguous(), fc = f.contiguous(), hc = h.contiguous(),
             gc = g.contiguous();
  auto ge = at::empty({n}, x.options());
  auto [Ct, Pt] = detail::whitened_sums(x, t, k, block_rows, [&](int64_t s, int64_t e, Tensor&, Tensor& cb,
                                                                     Tensor& ub) {
    K::vjp_scalars(fc.slice(0, s, e), yc.slice(0, s, e), ac.slice(0, s, e), hc.slice(0, s, e),
                   gc.slice(0, s, e), cb, ub, ge.slice(0, s, e));
  });
  return {Ct, Pt, ge};
}

// Backward pass B: with C̃ = E Λ Eᵀ, one product per block o = x [t E | t P̃] [b, d+k] gives
// both quadratic forms (Σ λ (Eᵀz)², (P̃ᵀz)·e) as accurately as the whitened rows themselves.
// basis = [t E | t P̃] [d, d+k] float64, eigenvalues = Λ [d] float64. Returns ∂L/∂a [n].
template <class K>
Tensor vjp_rows(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& f, const Tensor& h,
                const Tensor& ge, const Tensor& basis, const Tensor& eigenvalues, int64_t block_rows) {
  detail::check_rows(x, y, a, f, h);
  check_like(ge, x, "ge (g·e per row)", {x.size(0)});
  const int64_t n = x.size(0), d = x.size(1), k = y.size(1);
  check_f64(basis, x, "basis ([t E | t P̃])", {d, d + k});
  check_f64(eigenvalues, x, "eigenvalues", {d});
  const auto bb = basis.to(x.scalar_type());
  const auto lam = eigenvalues.contiguous();
  const auto yc = y.contiguous(), ac = a.contiguous(), fc = f.contiguous(), hc = h.contiguous(),
             gec = ge.contiguous();
  auto grad = at::empty({n}, x.options());
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto o = at::empty({blk, d + k}, x.options());
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto ob = o.slice(0, 0, e - s);
    at::mm_out(ob, x.slice(0, s, e), bb);
    K::vjp_rows(ob, lam, fc.slice(0, s, e), yc.slice(0, s, e), ac.slice(0, s, e), hc.slice(0, s, e),
                gec.slice(0, s, e), grad.slice(0, s, e));
  }
  return grad;
}

// Validation derivative: ∂L_val/∂a_j = (x_jᵀ p)·(y_j − x_jᵀ w), one [b,2k] product per block.
template <class K>
Tensor val_rows(const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& p, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y), n = x.size(0), d = x.size(1);
  check_f64(w, x, "w (ridge weights)", {d, k});
  check_f64(p, x, "p (S X_vᵀ G_v)", {d, k});
  const auto wp = at::cat({w, p}, 1).to(x.scalar_type());  // [d,2k]
  const auto yc = y.contiguous();
  auto grad = at::empty({n}, x.options());
  const int64_t blk = block_rows_for(block_rows, n, d);
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    K::val_rows(at::mm(x.slice(0, s, e), wp), yc.slice(0, s, e), grad.slice(0, s, e));
  }
  return grad;
}

// Registers the generic passes with a device's row kernels (called from */register.cpp).
#define DIVAEXT_REGISTER_PASSES(m, K)                  \
  do {                                                 \
    (m).impl("gram", &::divaext::gram<K>);             \
    (m).impl("loo_rows", &::divaext::loo_rows<K>);     \
    (m).impl("loss_grad", &::divaext::loss_grad<K>);   \
    (m).impl("loss_rows", &::divaext::loss_rows<K>);   \
    (m).impl("loo_grad", &::divaext::loo_grad<K>);     \
    (m).impl("vjp_gram", &::divaext::vjp_gram<K>);     \
    (m).impl("vjp_rows", &::divaext::vjp_rows<K>);     \
    (m).impl("val_rows", &::divaext::val_rows<K>);     \
  } while (0)

}  // namespace divaext
