// The backward passes of the dataset derivative (see passes.h for the forward ones and the
// fused pass loo_grad, which shares whitened_sums): backward pass A (whitened sums), pass B
// (with or without the LOO predictions f) and the validation derivative's rows. Written once
// for every device: block products through ATen, per-row work through the device's row
// kernels `K`.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <tuple>

#include "blocking.h"
#include "checks.h"
#include "pass_inputs.h"

namespace divaext {

using at::Tensor;

namespace detail {
// The loop shared by the backward-A passes: walk x in blocks, whiten each (z = x t, one full
// GEMM: t is upper triangular but panels measured slower), let `rows(s, e, z, c, U)` fill c [b]
// and U [b,k] for rows [s, e), and accumulate C̃ = Zᵀ diag(c) Z and P̃ = Zᵀ U in float64.
template <class Rows>
std::tuple<Tensor, Tensor> whitened_sums(const Tensor& x, const Tensor& t, int64_t k, int64_t block_rows,
                                         Rows&& rows) {
  const int64_t n = x.size(0), d = x.size(1);
  const auto tt = t.to(compute_type(x));
  GramAccumulator Ct(d, compute_on(x));
  auto Pt = at::zeros({d, k}, f64_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto z = at::empty({blk, d}, compute_on(x)), c = at::empty({blk}, compute_on(x)),
       u = at::empty({blk, k}, compute_on(x));
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto zb = z.slice(0, 0, e - s), cb = c.slice(0, 0, e - s), ub = u.slice(0, 0, e - s);
    at::mm_out(zb, rows_of(x, s, e), tt);
    rows(s, e, zb, cb, ub);
    Ct.add(zb, zb * cb.unsqueeze(1));
    Pt.add_(at::mm(zb.t(), ub));
  }
  return {Ct.result(), Pt};
}
}  // namespace detail

// Backward pass A alone (for an upstream gradient g known only after the forward, e.g.
// autograd through loo_predictions): C̃ = Zᵀ diag(c) Z and P̃ = Zᵀ U as in loo_grad, and
// ge = g·e [n] for pass B.
template <class K>
std::tuple<Tensor, Tensor, Tensor> vjp_gram(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& f,
                                            const Tensor& h, const Tensor& g, const Tensor& t, int64_t block_rows) {
  const int64_t k = detail::check_rows(x, y, a, f, h), n = x.size(0), d = x.size(1);
  check_like(g, x, "grad_predictions", {n, k});
  check_f64(t, x, "t (inverse Cholesky factor)", {d, d});
  const auto yc = y.contiguous(), ac = a.contiguous(), fc = f.contiguous(), hc = h.contiguous(),
             gc = g.contiguous();
  auto ge = at::empty({n}, detail::compute_on(x));
  auto [Ct, Pt] = detail::whitened_sums(x, t, k, block_rows, [&](int64_t s, int64_t e, Tensor&, Tensor& cb,
                                                                     Tensor& ub) {
    K::vjp_scalars(fc.slice(0, s, e), yc.slice(0, s, e), ac.slice(0, s, e), hc.slice(0, s, e),
                   gc.slice(0, s, e), cb, ub, ge.slice(0, s, e));
  });
  return {Ct, Pt, ge};
}

namespace detail {
// Pass B's loop: o = x basis per block [b, width], then rows(s, e, o) → ∂L/∂a of rows [s, e).
template <class Rows>
Tensor basis_rows(const Tensor& x, const Tensor& basis, int64_t block_rows, Rows&& rows) {
  const int64_t n = x.size(0), d = x.size(1);
  const auto bb = basis.to(compute_type(x));
  auto grad = at::empty({n}, compute_on(x));
  const int64_t blk = block_rows_for(block_rows, n, d);
  auto o = at::empty({blk, basis.size(1)}, compute_on(x));
  for (int64_t s = 0; s < n; s += blk) {
    const int64_t e = std::min(n, s + blk);
    auto ob = o.slice(0, 0, e - s);
    at::mm_out(ob, rows_of(x, s, e), bb);
    rows(s, e, ob, grad.slice(0, s, e));
  }
  return grad;
}
}  // namespace detail

// Backward pass B: with C̃ = E Λ Eᵀ, one product per block o = x [t E | t P̃] [b, d+k] gives
// both quadratic forms (Σ λ (Eᵀz)², (P̃ᵀz)·e) as accurately as the whitened rows themselves.
// basis = [t E | t P̃] [d, d+k] float64, eigenvalues = Λ [d] float64. Returns ∂L/∂a [n].
template <class K>
Tensor vjp_rows(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& f, const Tensor& h,
                const Tensor& ge, const Tensor& basis, const Tensor& eigenvalues, int64_t block_rows) {
  const int64_t k = detail::check_rows(x, y, a, f, h), d = x.size(1);
  check_like(ge, x, "ge (g·e per row)", {x.size(0)});
  check_f64(basis, x, "basis ([t E | t P̃])", {d, d + k});
  check_f64(eigenvalues, x, "eigenvalues", {d});
  const auto lam = eigenvalues.contiguous();
  const auto yc = y.contiguous(), ac = a.contiguous(), fc = f.contiguous(), hc = h.contiguous(),
             gec = ge.contiguous();
  return detail::basis_rows(x, basis, block_rows, [&](int64_t s, int64_t e, const Tensor& ob, Tensor grad) {
    K::vjp_rows(ob, lam, fc.slice(0, s, e), yc.slice(0, s, e), ac.slice(0, s, e), hc.slice(0, s, e),
                gec.slice(0, s, e), grad);
  });
}

// Backward pass B without the LOO predictions (after loo_grad, which keeps none): basis =
// [t E | t P̃ | t v] [d, d+2k], so o = x basis also gives the fit ŷ = z v and the row kernel
// forms y − ŷ = D (y − f) itself. Returns ∂L/∂a [n].
template <class K>
Tensor vjp_fit(const Tensor& x, const Tensor& y, const Tensor& a, const Tensor& h, const Tensor& ge,
               const Tensor& basis, const Tensor& eigenvalues, int64_t block_rows) {
  check_features(x);
  const int64_t n = x.size(0), d = x.size(1);
  TORCH_CHECK_VALUE(basis.dim() == 2 && basis.size(0) == d && basis.size(1) > d && (basis.size(1) - d) % 2 == 0,
                    "divaext: basis ([t E | t P̃ | t v]) must have shape [d, d + 2k] with d = ", d, ", got ",
                    basis.sizes());
  const int64_t k = check_targets(y, x, (basis.size(1) - d) / 2);
  check_like(a, x, "weights", {n});
  check_like(h, x, "leverages", {n});
  check_like(ge, x, "ge (g·e per row)", {n});
  check_f64(basis, x, "basis ([t E | t P̃ | t v])", {d, d + 2 * k});
  check_f64(eigenvalues, x, "eigenvalues", {d});
  const auto lam = eigenvalues.contiguous();
  const auto yc = y.contiguous(), ac = a.contiguous(), hc = h.contiguous(), gec = ge.contiguous();
  return detail::basis_rows(x, basis, block_rows, [&](int64_t s, int64_t e, const Tensor& ob, Tensor grad) {
    K::vjp_fit(ob, lam, yc.slice(0, s, e), ac.slice(0, s, e), hc.slice(0, s, e), gec.slice(0, s, e), grad);
  });
}

// Validation derivative: ∂L_val/∂a_j = (x_jᵀ p)·(y_j − x_jᵀ w), one [b,2k] product per block.
template <class K>
Tensor val_rows(const Tensor& x, const Tensor& y, const Tensor& w, const Tensor& p, int64_t block_rows) {
  const int64_t k = detail::check_features_targets(x, y, w.size(-1)), d = x.size(1);
  check_f64(w, x, "w (ridge weights)", {d, k});
  check_f64(p, x, "p (S X_vᵀ G_v)", {d, k});
  const auto yc = y.contiguous();
  return detail::basis_rows(x, at::cat({w, p}, 1), block_rows, [&](int64_t s, int64_t e, const Tensor& ob,
                                                                  Tensor grad) {
    K::val_rows(ob, yc.slice(0, s, e), grad);
  });
}

}  // namespace divaext
