// CUDA row kernels of the dataset-derivative passes: the formulas of row_math.h, one warp per
// row. Torch-free (raw pointers, a stream) so nvcc compiles them even where torch has no CUDA
// (CI's compile check); launched from cuda/register.cpp. Every array is contiguous, row-major,
// on the current device, in T (the features' dtype) unless marked double; b rows, d features,
// k outputs. Each returns the launch's cudaError_t. T is the compute dtype (float32 for
// half-precision features). Targets come as a dense y [b,k] in T or, in the *_labels
// launchers, as class indices labels [b] in [0, k) (csrc/targets.h): the same row formula.
#pragma once
#include <cuda_runtime.h>

namespace divaext::cuda {

// h = |z|², f = (ŷ − a h y) / (1 − a h).
template <typename T>
cudaError_t launch_loo_rows(const T* z /*[b,d]*/, const T* yhat /*[b,k]*/, const T* y /*[b,k]*/,
                            const T* a /*[b]*/, T* f /*[b,k] out*/, T* h /*[b] out*/, long b, long d, long k,
                            cudaStream_t stream);

// loss = w·loss(f, y); g = w·∂loss/∂f. kind: a loss code of losses.h.
template <typename T>
cudaError_t launch_loss_grad(const T* f /*[b,k]*/, const T* y /*[b,k]*/, const T* w /*[b]*/, int kind,
                             T* g /*[b,k] out*/, double* loss /*[b] out*/, long b, long k, cudaStream_t stream);

// Unweighted loss of each of the n·per prediction rows, row (i, j) against target row i.
template <typename T>
cudaError_t launch_loss_rows(const T* f /*[n,per,k]*/, const T* y /*[n,k]*/, int kind,
                             double* loss /*[n,per] out*/, long n, long per, long k, cudaStream_t stream);

// ge = g·e, c = a (g·e) / D, u = g / D with e = y − f, D = 1 − a h.
template <typename T>
cudaError_t launch_vjp_scalars(const T* f /*[b,k]*/, const T* y /*[b,k]*/, const T* a /*[b]*/,
                               const T* h /*[b]*/, const T* g /*[b,k]*/, T* c /*[b] out*/, T* u /*[b,k] out*/,
                               T* ge /*[b] out*/, long b, long k, cudaStream_t stream);

// The fused pass: loo_rows, then the loss (as launch_loss_grad) and vjp_scalars of each row.
// f and g are block scratch; h and ge = g·e are what pass B needs; resid = max_c |y − ŷ| per
// row, the residual scale of the accuracy estimate.
template <typename T>
cudaError_t launch_loo_grad(const T* z /*[b,d]*/, const T* yhat /*[b,k]*/, const T* y /*[b,k]*/,
                            const T* a /*[b]*/, const T* w /*[b]*/, int kind, T* f /*[b,k] scratch*/,
                            T* h /*[b] out*/, T* g /*[b,k] scratch*/, double* loss /*[b] out*/,
                            T* c /*[b] out*/, T* u /*[b,k] out*/, T* ge /*[b] out*/, T* resid /*[b] out*/, long b,
                            long d, long k, cudaStream_t stream);

// grad = D (o[d:]·e) + Σ λ o[:d]² − h ge − a ge h² / D, with o = x [tE | tP̃].
template <typename T>
cudaError_t launch_vjp_rows(const T* o /*[b,d+k]*/, const double* lam /*[d]*/, const T* f /*[b,k]*/,
                            const T* y /*[b,k]*/, const T* a /*[b]*/, const T* h /*[b]*/, const T* ge /*[b]*/,
                            T* grad /*[b] out*/, long b, long d, long k, cudaStream_t stream);

// As the launchers above, with class indices instead of dense targets.
template <typename T>
cudaError_t launch_loo_rows_labels(const T* z /*[b,d]*/, const T* yhat /*[b,k]*/, const long* labels /*[b]*/,
                                   const T* a /*[b]*/, T* f /*[b,k] out*/, T* h /*[b] out*/, long b, long d, long k,
                                   cudaStream_t stream);
template <typename T>
cudaError_t launch_vjp_scalars_labels(const T* f /*[b,k]*/, const long* labels /*[b]*/, const T* a /*[b]*/,
                                      const T* h /*[b]*/, const T* g /*[b,k]*/, T* c /*[b] out*/, T* u /*[b,k] out*/,
                                      T* ge /*[b] out*/, long b, long k, cudaStream_t stream);
template <typename T>
cudaError_t launch_loo_grad_labels(const T* z /*[b,d]*/, const T* yhat /*[b,k]*/, const long* labels /*[b]*/,
                                   const T* a /*[b]*/, const T* w /*[b]*/, int kind, T* f /*[b,k] scratch*/,
                                   T* h /*[b] out*/, T* g /*[b,k] scratch*/, double* loss /*[b] out*/,
                                   T* c /*[b] out*/, T* u /*[b,k] out*/, T* ge /*[b] out*/, T* resid /*[b] out*/,
                                   long b, long d, long k, cudaStream_t stream);
template <typename T>
cudaError_t launch_vjp_rows_labels(const T* o /*[b,d+k]*/, const double* lam /*[d]*/, const T* f /*[b,k]*/,
                                   const long* labels /*[b]*/, const T* a /*[b]*/, const T* h /*[b]*/,
                                   const T* ge /*[b]*/, T* grad /*[b] out*/, long b, long d, long k,
                                   cudaStream_t stream);

// Pass B without f: grad = o[d:d+k]·(y − ŷ) + Σ λ o[:d]² − h ge − a ge h² / D, with
// o = x [tE | tP̃ | tv] and ŷ = o[d+k:].
template <typename T>
cudaError_t launch_vjp_fit(const T* o /*[b,d+2k]*/, const double* lam /*[d]*/, const T* y /*[b,k]*/,
                           const T* a /*[b]*/, const T* h /*[b]*/, const T* ge /*[b]*/, T* grad /*[b] out*/, long b,
                           long d, long k, cudaStream_t stream);
template <typename T>
cudaError_t launch_vjp_fit_labels(const T* o /*[b,d+2k]*/, const double* lam /*[d]*/, const long* labels /*[b]*/,
                                  const T* a /*[b]*/, const T* h /*[b]*/, const T* ge /*[b]*/, T* grad /*[b] out*/,
                                  long b, long d, long k, cudaStream_t stream);

// grad = xp·(y − xw), xwp = [xw | xp].
template <typename T>
cudaError_t launch_val_rows(const T* xwp /*[b,2k]*/, const T* y /*[b,k]*/, T* grad /*[b] out*/, long b, long k,
                            cudaStream_t stream);
template <typename T>
cudaError_t launch_val_rows_labels(const T* xwp /*[b,2k]*/, const long* labels /*[b]*/, T* grad /*[b] out*/,
                                   long b, long k, cudaStream_t stream);

}  // namespace divaext::cuda
