// The per-row formulas of the dataset derivative, shared verbatim by the CPU loops and the
// CUDA kernels (host/device inline, no torch). One row: d features, k outputs; sums in double.
// Notation follows docs/math.md: D = 1 − a h, e = y − f (LOO residual), r = D e.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define DIVAEXT_HD __host__ __device__ __forceinline__
#else
#define DIVAEXT_HD inline
#endif

namespace divaext::rows {

enum LossKind : int { kMse = 0, kCe = 1, kCeMisclassified = 2 };

// h = |z|², f = (ŷ − a h y) / D.
template <typename T>
DIVAEXT_HD void loo_row(const T* z, const T* yhat, const T* y, T a, T* f, T* h, long d, long k) {
  double hh = 0;
  for (long j = 0; j < d; ++j) hh += double(z[j]) * double(z[j]);
  const double ah = double(a) * hh, D = 1.0 - ah;
  for (long c = 0; c < k; ++c) f[c] = T((double(yhat[c]) - ah * double(y[c])) / D);
  *h = T(hh);
}

// Loss of one row and g = w ∂loss/∂f. Returns w·loss. Cross-entropy treats f as logits and y
// as (possibly soft) target mass: loss = (Σy) lse(f) − y·f. Misclassified: counted only where
// argmax f != argmax y (first maximum, like torch.argmax); the mask is held constant.
template <typename T>
DIVAEXT_HD double loss_row(const T* f, const T* y, T w, int kind, T* g, long k) {
  if (kind == kMse) {
    double l = 0;
    for (long c = 0; c < k; ++c) {
      const double diff = double(f[c]) - double(y[c]);
      l += diff * diff;
      g[c] = T(2.0 * double(w) * diff);
    }
    return double(w) * l;
  }
  long af = 0, ay = 0;
  double mf = double(f[0]), sy = 0, yf = 0;
  for (long c = 0; c < k; ++c) {
    if (double(f[c]) > mf) { mf = double(f[c]); af = c; }
    if (y[c] > y[ay]) ay = c;
    sy += double(y[c]);
    yf += double(y[c]) * double(f[c]);
  }
  if (kind == kCeMisclassified && af == ay) {
    for (long c = 0; c < k; ++c) g[c] = T(0);
    return 0.0;
  }
  double se = 0;
  for (long c = 0; c < k; ++c) se += exp(double(f[c]) - mf);
  const double lse = mf + log(se);
  for (long c = 0; c < k; ++c) g[c] = T(double(w) * (sy * exp(double(f[c]) - lse) - double(y[c])));
  return double(w) * (sy * lse - yf);
}

// Backward scalars of one row: ge = g·e, c = a (g·e) / D, u = g / D.
template <typename T>
DIVAEXT_HD void vjp_scalars_row(const T* f, const T* y, T a, T h, const T* g, T* c, T* u, T* ge_out, long k) {
  const double D = 1.0 - double(a) * double(h);
  double ge = 0;
  for (long j = 0; j < k; ++j) {
    ge += double(g[j]) * (double(y[j]) - double(f[j]));
    u[j] = T(double(g[j]) / D);
  }
  *c = T(double(a) * ge / D);
  *ge_out = T(ge);
}

// ∂L/∂a of one row in the eigenbasis of the whitened C̃ = Zᵀ diag(c) Z = E Λ Eᵀ:
// o = xᵀ [t E | t P̃] (d + k values), so o[:d] = Eᵀ z and o[d:] = P̃ᵀ z. Then
// ∂L/∂a = D (P̃ᵀz)·e + Σ_m λ_m (Eᵀz)_m² − h (g·e) − a (g·e) h² / D. Only the scalar g·e of
// the loss gradient is needed here, so the passes keep that [n] rather than g [n,k].
template <typename T>
DIVAEXT_HD T vjp_row(const T* o, const double* lam, const T* f, const T* y, T a, T h, T ge_in, long d,
                     long k) {
  double q = 0;
  for (long m = 0; m < d; ++m) q += lam[m] * double(o[m]) * double(o[m]);
  double pe = 0;
  for (long c = 0; c < k; ++c) pe += double(o[d + c]) * (double(y[c]) - double(f[c]));
  const double hh = double(h), D = 1.0 - double(a) * hh, ge = double(ge_in);
  return T(D * pe + q - hh * ge - double(a) * ge * hh * hh / D);
}

// Validation derivative of one row: (xᵀp)·(y − xᵀw); xwp = [xᵀw, xᵀp] (2k values).
template <typename T>
DIVAEXT_HD T val_row(const T* xwp, const T* y, long k) {
  double s = 0;
  for (long c = 0; c < k; ++c) s += double(xwp[k + c]) * (double(y[c]) - double(xwp[c]));
  return T(s);
}

}  // namespace divaext::rows
