// The per-row formulas of the dataset derivative, written once for every device: each is a
// template over the device's row reducer R (row_reducer.h), a serial loop on the CPU and the
// lanes of a warp on CUDA. One row: d features, k outputs; sums in double. Torch-free,
// host/device inline. Notation follows docs/math.md: D = 1 − a h, e = y − f (LOO residual).
// Scalar outputs (h, the loss, c, ge, grad) are written once per row through r.put. A row's
// targets y are read through an accessor (targets.h): a dense row or a class index.
#pragma once
#include "losses.h"
#include "row_reducer.h"
#include "targets.h"

namespace divaext::rows {

// h = |z|², f = (ŷ − a h y) / D. z [d], yhat [k], y → f [k], *h; returns h (every worker).
template <class R, typename T, class Y>
DIVAEXT_HD T loo_row(const R& r, const T* z, const T* yhat, const Y& y, T a, T* f, T* h, long d, long k) {
  const double hh = r.sum(d, [&](long j) { return double(z[j]) * double(z[j]); });
  const double ah = double(a) * hh, D = 1.0 - ah;
  r.each(k, [&](long c) { f[c] = T((double(yhat[c]) - ah * y(c)) / D); });
  r.put(h, T(hh));
  return T(hh);
}

// The loss `kind` (its code in losses::Losses) of one row: *loss = w·loss (float64) and
// g [k] = w ∂loss/∂f (g a T* or a Discard).
template <class R, typename T, class Y, class G>
DIVAEXT_HD void loss_row(const R& r, int kind, const T* f, const Y& y, T w, G g, double* loss, long k) {
  const double l = losses::Losses::visit(kind, [&](auto loss) { return decltype(loss)::row(r, f, y, w, g, k); });
  r.put(loss, l);
}

// Backward scalars of one row: ge = g·e, c = a (g·e) / D, u [k] = g / D.
template <class R, typename T, class Y>
DIVAEXT_HD void vjp_scalars_row(const R& r, const T* f, const Y& y, T a, T h, const T* g, T* c, T* u, T* ge,
                                long k) {
  const double D = 1.0 - double(a) * double(h);
  const double s = r.sum(k, [&](long j) {
    u[j] = T(double(g[j]) / D);
    return double(g[j]) * (y(j) - double(f[j]));
  });
  r.put(c, T(double(a) * s / D));
  r.put(ge, T(s));
}

// The largest fit residual of one row, *resid = max_c |y_c − ŷ_c| (NaN if one is NaN): the
// scale of the residuals r = y − x·W = D (y − f) that every term of the gradient is
// proportional to (python/divaext/engine/accuracy.py judges the cancellation in forming them).
template <class R, typename T, class Y>
DIVAEXT_HD void residual_row(const R& r, const T* yhat, const Y& y, T* resid, long k) {
  r.put(resid, T(r.amax(k, [&](long c) { return y(c) - double(yhat[c]); })));
}

// The fused pass of one row: the residual scale, loo_row, then the loss and vjp_scalars of its
// f. f and g are written and re-read by the row's workers: r.sync() orders those accesses. D
// is formed from h in T, as vjp_scalars_row does for the unfused path (vjp_gram), so both agree.
template <class R, typename T, class Y>
DIVAEXT_HD void loo_grad_row(const R& r, const T* z, const T* yhat, const Y& y, T a, T w, int kind, T* f, T* h,
                             T* g, double* loss, T* c, T* u, T* ge, T* resid, long d, long k) {
  residual_row(r, yhat, y, resid, k);
  const T hi = loo_row(r, z, yhat, y, a, f, h, d, k);
  r.sync();
  loss_row(r, kind, f, y, w, g, loss, k);
  r.sync();
  vjp_scalars_row(r, f, y, a, hi, g, c, u, ge, k);
}

// ∂L/∂a of one row in the eigenbasis of the whitened C̃ = Zᵀ diag(c) Z = E Λ Eᵀ:
// o = xᵀ [t E | t P̃] (d + k values), so o[:d] = Eᵀ z and o[d:] = P̃ᵀ z. Then
// ∂L/∂a = D (P̃ᵀz)·e + Σ_m λ_m (Eᵀz)_m² − h (g·e) − a (g·e) h² / D. Only the scalar g·e of
// the loss gradient is needed here, so the passes keep that [n] rather than g [n,k].
template <class R, typename T, class Y>
DIVAEXT_HD void vjp_row(const R& r, const T* o, const double* lam, const T* f, const Y& y, T a, T h, T ge_in,
                        T* grad, long d, long k) {
  const double q = r.sum(d, [&](long m) { return lam[m] * double(o[m]) * double(o[m]); });
  const double pe = r.sum(k, [&](long c) { return double(o[d + c]) * (y(c) - double(f[c])); });
  const double hh = double(h), D = 1.0 - double(a) * hh, ge = double(ge_in);
  r.put(grad, T(D * pe + q - hh * ge - double(a) * ge * hh * hh / D));
}

// Pass B without the LOO predictions (the fused pass keeps none): o = xᵀ [t E | t P̃ | t v]
// (d + 2k values) also gives the fit ŷ = o[d+k:], and D (y − f) = y − ŷ, so
// ∂L/∂a = (P̃ᵀz)·(y − ŷ) + Σ_m λ_m (Eᵀz)_m² − h (g·e) − a (g·e) h² / D: vjp_row with f
// recomputed from ŷ, h and y in the row instead of read from an [n,k] array.
template <class R, typename T, class Y>
DIVAEXT_HD void vjp_fit_row(const R& r, const T* o, const double* lam, const Y& y, T a, T h, T ge_in, T* grad,
                            long d, long k) {
  const double q = r.sum(d, [&](long m) { return lam[m] * double(o[m]) * double(o[m]); });
  const double pr = r.sum(k, [&](long c) { return double(o[d + c]) * (y(c) - double(o[d + k + c])); });
  const double hh = double(h), D = 1.0 - double(a) * hh, ge = double(ge_in);
  r.put(grad, T(pr + q - hh * ge - double(a) * ge * hh * hh / D));
}

// Validation derivative of one row: (xᵀp)·(y − xᵀw); xwp = [xᵀw, xᵀp] (2k values).
template <class R, typename T, class Y>
DIVAEXT_HD void val_row(const R& r, const T* xwp, const Y& y, T* grad, long k) {
  r.put(grad, T(r.sum(k, [&](long c) { return double(xwp[k + c]) * (y(c) - double(xwp[c])); })));
}

}  // namespace divaext::rows
