// The CUDA row kernels: one warp per row (WarpRow, warp_row.cuh) running the per-row formulas
// of row_math.h, the same code the CPU runs serially. This file holds only the kernels'
// row indexing and the launchers.
#include "cuda/row_kernels.cuh"
#include "cuda/warp_row.cuh"
#include "row_math.h"

namespace divaext::cuda {
namespace {

// Y: the block's targets (targets.h), dense [b,k] rows or class indices [b]; y.row(i) is row i's.
template <typename T, class Y>
__global__ void loo_rows_kernel(const T* __restrict__ z, const T* __restrict__ yhat, Y y, const T* __restrict__ a,
                                T* __restrict__ f, T* __restrict__ h, long b, long d, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::loo_row(r, z + i * d, yhat + i * k, y.row(i), a[i], f + i * k, h + i, d, k);
}

template <typename T>
__global__ void loss_grad_kernel(const T* __restrict__ f, const T* __restrict__ y, const T* __restrict__ w,
                                 int kind, T* __restrict__ g, double* __restrict__ loss, long b, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::loss_row(r, kind, f + i * k, rows::DenseRow<T>{y + i * k}, w[i], g + i * k, loss + i, k);
}

// Row i of f is scored against row i / per of y (per predictions per target row).
template <typename T>
__global__ void loss_rows_kernel(const T* __restrict__ f, const T* __restrict__ y, int kind,
                                 double* __restrict__ loss, long m, long per, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= m) return;
  rows::loss_row(r, kind, f + i * k, rows::DenseRow<T>{y + i / per * k}, T(1), rows::Discard{}, loss + i, k);
}

template <typename T, class Y>
__global__ void vjp_scalars_kernel(const T* __restrict__ f, Y y, const T* __restrict__ a, const T* __restrict__ h,
                                   const T* __restrict__ g, T* __restrict__ c, T* __restrict__ u,
                                   T* __restrict__ ge, long b, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::vjp_scalars_row(r, f + i * k, y.row(i), a[i], h[i], g + i * k, c + i, u + i * k, ge + i, k);
}

template <typename T, class Y>
__global__ void loo_grad_kernel(const T* __restrict__ z, const T* __restrict__ yhat, Y y,
                                const T* __restrict__ a, const T* __restrict__ w, int kind, T* __restrict__ f,
                                T* __restrict__ h, T* __restrict__ g, double* __restrict__ loss,
                                T* __restrict__ c, T* __restrict__ u, T* __restrict__ ge, T* __restrict__ resid,
                                long b, long d, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::loo_grad_row(r, z + i * d, yhat + i * k, y.row(i), a[i], w[i], kind, f + i * k, h + i, g + i * k,
                     loss + i, c + i, u + i * k, ge + i, resid + i, d, k);
}

template <typename T, class Y>
__global__ void vjp_rows_kernel(const T* __restrict__ o, const double* __restrict__ lam, const T* __restrict__ f,
                                Y y, const T* __restrict__ a, const T* __restrict__ h,
                                const T* __restrict__ ge, T* __restrict__ grad, long b, long d, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::vjp_row(r, o + i * (d + k), lam, f + i * k, y.row(i), a[i], h[i], ge[i], grad + i, d, k);
}

template <typename T, class Y>
__global__ void vjp_fit_kernel(const T* __restrict__ o, const double* __restrict__ lam, Y y,
                               const T* __restrict__ a, const T* __restrict__ h, const T* __restrict__ ge,
                               T* __restrict__ grad, long b, long d, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::vjp_fit_row(r, o + i * (d + 2 * k), lam, y.row(i), a[i], h[i], ge[i], grad + i, d, k);
}

template <typename T, class Y>
__global__ void val_rows_kernel(const T* __restrict__ xwp, Y y, T* __restrict__ grad, long b, long k) {
  WarpRow r;
  const long i = r.row();
  if (i >= b) return;
  rows::val_row(r, xwp + i * 2 * k, y.row(i), grad + i, k);
}

}  // namespace

#define DIVAEXT_LAUNCH(kernel, b, stream, ...)                                            \
  do {                                                                                    \
    if ((b) > 0) kernel<<<grid_for(b), kWarp * kWarpsPerBlock, 0, (stream)>>>(__VA_ARGS__); \
    return cudaGetLastError();                                                            \
  } while (0)

template <typename T>
cudaError_t launch_loo_rows(const T* z, const T* yhat, const T* y, const T* a, T* f, T* h, long b, long d,
                            long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((loo_rows_kernel<T, rows::DenseTargets<T>>), b, stream, z, yhat, rows::DenseTargets<T>{y, k}, a, f,
                 h, b, d, k);
}

template <typename T>
cudaError_t launch_loo_rows_labels(const T* z, const T* yhat, const long* labels, const T* a, T* f, T* h, long b,
                                   long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((loo_rows_kernel<T, rows::LabelTargets>), b, stream, z, yhat, rows::LabelTargets{labels}, a, f, h,
                 b, d, k);
}

template <typename T>
cudaError_t launch_loss_grad(const T* f, const T* y, const T* w, int kind, T* g, double* loss, long b, long k,
                             cudaStream_t stream) {
  DIVAEXT_LAUNCH(loss_grad_kernel<T>, b, stream, f, y, w, kind, g, loss, b, k);
}

template <typename T>
cudaError_t launch_loss_rows(const T* f, const T* y, int kind, double* loss, long n, long per, long k,
                             cudaStream_t stream) {
  DIVAEXT_LAUNCH(loss_rows_kernel<T>, n * per, stream, f, y, kind, loss, n * per, per, k);
}

template <typename T>
cudaError_t launch_vjp_scalars(const T* f, const T* y, const T* a, const T* h, const T* g, T* c, T* u, T* ge,
                               long b, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((vjp_scalars_kernel<T, rows::DenseTargets<T>>), b, stream, f, rows::DenseTargets<T>{y, k}, a, h, g,
                 c, u, ge, b, k);
}

template <typename T>
cudaError_t launch_vjp_scalars_labels(const T* f, const long* labels, const T* a, const T* h, const T* g, T* c,
                                      T* u, T* ge, long b, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((vjp_scalars_kernel<T, rows::LabelTargets>), b, stream, f, rows::LabelTargets{labels}, a, h, g, c,
                 u, ge, b, k);
}

template <typename T>
cudaError_t launch_loo_grad(const T* z, const T* yhat, const T* y, const T* a, const T* w, int kind, T* f, T* h,
                            T* g, double* loss, T* c, T* u, T* ge, T* resid, long b, long d, long k,
                            cudaStream_t stream) {
  DIVAEXT_LAUNCH((loo_grad_kernel<T, rows::DenseTargets<T>>), b, stream, z, yhat, rows::DenseTargets<T>{y, k}, a, w,
                 kind, f, h, g, loss, c, u, ge, resid, b, d, k);
}

template <typename T>
cudaError_t launch_loo_grad_labels(const T* z, const T* yhat, const long* labels, const T* a, const T* w, int kind,
                                   T* f, T* h, T* g, double* loss, T* c, T* u, T* ge, T* resid, long b, long d,
                                   long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((loo_grad_kernel<T, rows::LabelTargets>), b, stream, z, yhat, rows::LabelTargets{labels}, a, w,
                 kind, f, h, g, loss, c, u, ge, resid, b, d, k);
}

template <typename T>
cudaError_t launch_vjp_rows(const T* o, const double* lam, const T* f, const T* y, const T* a, const T* h,
                            const T* ge, T* grad, long b, long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((vjp_rows_kernel<T, rows::DenseTargets<T>>), b, stream, o, lam, f, rows::DenseTargets<T>{y, k}, a,
                 h, ge, grad, b, d, k);
}

template <typename T>
cudaError_t launch_vjp_rows_labels(const T* o, const double* lam, const T* f, const long* labels, const T* a,
                                   const T* h, const T* ge, T* grad, long b, long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((vjp_rows_kernel<T, rows::LabelTargets>), b, stream, o, lam, f, rows::LabelTargets{labels}, a, h,
                 ge, grad, b, d, k);
}

template <typename T>
cudaError_t launch_vjp_fit(const T* o, const double* lam, const T* y, const T* a, const T* h, const T* ge, T* grad,
                           long b, long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((vjp_fit_kernel<T, rows::DenseTargets<T>>), b, stream, o, lam, rows::DenseTargets<T>{y, k}, a, h,
                 ge, grad, b, d, k);
}

template <typename T>
cudaError_t launch_vjp_fit_labels(const T* o, const double* lam, const long* labels, const T* a, const T* h,
                                  const T* ge, T* grad, long b, long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((vjp_fit_kernel<T, rows::LabelTargets>), b, stream, o, lam, rows::LabelTargets{labels}, a, h, ge,
                 grad, b, d, k);
}

template <typename T>
cudaError_t launch_val_rows(const T* xwp, const T* y, T* grad, long b, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((val_rows_kernel<T, rows::DenseTargets<T>>), b, stream, xwp, rows::DenseTargets<T>{y, k}, grad, b,
                 k);
}

template <typename T>
cudaError_t launch_val_rows_labels(const T* xwp, const long* labels, T* grad, long b, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH((val_rows_kernel<T, rows::LabelTargets>), b, stream, xwp, rows::LabelTargets{labels}, grad, b, k);
}

#define DIVAEXT_INSTANTIATE(T)                                                                              \
  template cudaError_t launch_loo_rows<T>(const T*, const T*, const T*, const T*, T*, T*, long, long, long, \
                                          cudaStream_t);                                                    \
  template cudaError_t launch_loss_grad<T>(const T*, const T*, const T*, int, T*, double*, long, long,      \
                                           cudaStream_t);                                                   \
  template cudaError_t launch_loss_rows<T>(const T*, const T*, int, double*, long, long, long, cudaStream_t); \
  template cudaError_t launch_vjp_scalars<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,  \
                                             long, long, cudaStream_t);                                     \
  template cudaError_t launch_loo_grad<T>(const T*, const T*, const T*, const T*, const T*, int, T*, T*, T*, \
                                          double*, T*, T*, T*, T*, long, long, long, cudaStream_t);         \
  template cudaError_t launch_vjp_rows<T>(const T*, const double*, const T*, const T*, const T*, const T*,  \
                                          const T*, T*, long, long, long, cudaStream_t);                    \
  template cudaError_t launch_val_rows<T>(const T*, const T*, T*, long, long, cudaStream_t);                   \
  template cudaError_t launch_loo_rows_labels<T>(const T*, const T*, const long*, const T*, T*, T*, long, long,   \
                                                 long, cudaStream_t);                                            \
  template cudaError_t launch_vjp_scalars_labels<T>(const T*, const long*, const T*, const T*, const T*, T*, T*, \
                                                    T*, long, long, cudaStream_t);                               \
  template cudaError_t launch_loo_grad_labels<T>(const T*, const T*, const long*, const T*, const T*, int, T*,   \
                                                 T*, T*, double*, T*, T*, T*, T*, long, long, long,              \
                                                 cudaStream_t);                                                  \
  template cudaError_t launch_vjp_rows_labels<T>(const T*, const double*, const T*, const long*, const T*,       \
                                                 const T*, const T*, T*, long, long, long, cudaStream_t);        \
  template cudaError_t launch_vjp_fit<T>(const T*, const double*, const T*, const T*, const T*, const T*, T*,    \
                                         long, long, long, cudaStream_t);                                        \
  template cudaError_t launch_vjp_fit_labels<T>(const T*, const double*, const long*, const T*, const T*,        \
                                                const T*, T*, long, long, long, cudaStream_t);                   \
  template cudaError_t launch_val_rows_labels<T>(const T*, const long*, T*, long, long, cudaStream_t);

DIVAEXT_INSTANTIATE(float)
DIVAEXT_INSTANTIATE(double)

}  // namespace divaext::cuda
