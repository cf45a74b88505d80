// CUDA row kernels of the dataset-derivative passes. Torch-free (raw pointers, a stream) so
// nvcc compiles them even where torch has no CUDA (CI's compile check); launched from
// cuda/register.cpp. Every array is contiguous, row-major, on the current device; b rows,
// d features, k outputs. Each returns the launch's cudaError_t.
#pragma once
#include <cuda_runtime.h>

namespace divaext::cuda {

// h = |z|², f = (ŷ − a h y) / (1 − a h).
template <typename T>
cudaError_t launch_loo_rows(const T* z /*[b,d]*/, const T* yhat /*[b,k]*/, const T* y /*[b,k]*/,
                            const T* a /*[b]*/, T* f /*[b,k]*/, T* h /*[b]*/, long b, long d, long k,
                            cudaStream_t stream);

// loss [b] (float64) = w·loss(f, y); g [b,k] = w·∂loss/∂f. kind: 0 mse, 1 ce, 2 ce misclassified.
template <typename T>
cudaError_t launch_loss_grad(const T* f /*[b,k]*/, const T* y /*[b,k]*/, const T* w /*[b]*/, int kind,
                             T* g /*[b,k]*/, double* loss /*[b]*/, long b, long k, cudaStream_t stream);

// ge = g·e, c = a (g·e) / D, u = g / D with e = y − f, D = 1 − a h.
template <typename T>
cudaError_t launch_vjp_scalars(const T* f, const T* y, const T* a, const T* h, const T* g,
                               T* c /*[b]*/, T* u /*[b,k]*/, T* ge /*[b]*/, long b, long k, cudaStream_t stream);

// The fused pass: loo_rows, then the loss (as launch_loss_grad) and vjp_scalars of each row.
// g [b,k] is block scratch; ge [b] = g·e is what pass B needs of it.
template <typename T>
cudaError_t launch_loo_grad(const T* z /*[b,d]*/, const T* yhat /*[b,k]*/, const T* y /*[b,k]*/,
                            const T* a /*[b]*/, const T* w /*[b]*/, int kind, T* f /*[b,k]*/, T* h /*[b]*/,
                            T* g /*[b,k]*/, double* loss /*[b]*/, T* c /*[b]*/, T* u /*[b,k]*/, T* ge /*[b]*/,
                            long b, long d, long k, cudaStream_t stream);

// o = x [tE | tP̃] [b,d+k], lam [d] (float64), ge = g·e [b]:
// grad = D (o[d:]·e) + Σ λ o[:d]² − h ge − a ge h² / D.
template <typename T>
cudaError_t launch_vjp_rows(const T* o, const double* lam, const T* f, const T* y, const T* a, const T* h,
                            const T* ge, T* grad /*[b]*/, long b, long d, long k, cudaStream_t stream);

// grad = xp·(y − xw), xwp = [xw | xp] [b,2k].
template <typename T>
cudaError_t launch_val_rows(const T* xwp, const T* y, T* grad, long b, long k, cudaStream_t stream);

}  // namespace divaext::cuda
