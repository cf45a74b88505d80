// One warp per row: lanes stride over the row's d (or k) contiguous values, so reads are
// coalesced, and sums are reduced with shuffles in double. The formulas are those of
// row_math.h (the CPU path), rewritten lane-parallel.
#include <cfloat>
#include <climits>

#include "cuda/row_kernels.cuh"

namespace divaext::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;  // 256 threads, 8 rows per block
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

// First index of the maximum (ties → smaller index), like torch.argmax and the CPU kernels.
__device__ __forceinline__ void warp_argmax(double& v, int& i) {
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(kFull, v, o);
    const int oi = __shfl_xor_sync(kFull, i, o);
    if (ov > v || (ov == v && oi < i)) { v = ov; i = oi; }
  }
}

template <typename T>
__device__ __forceinline__ void lane_argmax(const T* p, long k, int lane, double& v, int& i) {
  v = -DBL_MAX;
  i = INT_MAX;
  for (long c = lane; c < k; c += kWarp)
    if (double(p[c]) > v) { v = double(p[c]); i = int(c); }
  warp_argmax(v, i);
}

__device__ __forceinline__ long warp_row(int& lane) {
  lane = threadIdx.x % kWarp;
  return long(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
}

inline unsigned grid_for(long b) { return unsigned((b + kWarpsPerBlock - 1) / kWarpsPerBlock); }

// h = |z|², f = (ŷ − a h y) / D for row i (whole warp); returns (h, D) to every lane.
template <typename T>
__device__ __forceinline__ void loo_row_warp(const T* zi, const T* yhi, const T* yi, double ai, T* fi, long d,
                                             long k, int lane, double& hh, double& D) {
  hh = 0;
  for (long j = lane; j < d; j += kWarp) hh += double(zi[j]) * double(zi[j]);
  hh = warp_sum(hh);
  const double ah = ai * hh;
  D = 1.0 - ah;
  for (long c = lane; c < k; c += kWarp) fi[c] = T((double(yhi[c]) - ah * double(yi[c])) / D);
}

// w·loss of row i and gi = w ∂loss/∂f (whole warp); the value is valid in every lane.
template <typename T>
__device__ __forceinline__ double loss_row_warp(const T* fi, const T* yi, double wi, int kind, T* gi, long k,
                                                int lane) {
  if (kind == 0) {  // mse
    double l = 0;
    for (long c = lane; c < k; c += kWarp) {
      const double diff = double(fi[c]) - double(yi[c]);
      l += diff * diff;
      gi[c] = T(2.0 * wi * diff);
    }
    return wi * warp_sum(l);
  }
  double mf, my;
  int af, ay;
  lane_argmax(fi, k, lane, mf, af);
  lane_argmax(yi, k, lane, my, ay);
  if (kind == 2 && af == ay) {  // correctly classified: not counted
    for (long c = lane; c < k; c += kWarp) gi[c] = T(0);
    return 0.0;
  }
  double sy = 0, yf = 0, se = 0;
  for (long c = lane; c < k; c += kWarp) {
    sy += double(yi[c]);
    yf += double(yi[c]) * double(fi[c]);
    se += exp(double(fi[c]) - mf);
  }
  sy = warp_sum(sy);
  yf = warp_sum(yf);
  se = warp_sum(se);
  const double lse = mf + log(se);
  for (long c = lane; c < k; c += kWarp) gi[c] = T(wi * (sy * exp(double(fi[c]) - lse) - double(yi[c])));
  return wi * (sy * lse - yf);
}

// ge = g·e, c = a (g·e) / D and u = g / D of row i (whole warp). Reads fi and gi written by
// this warp.
template <typename T>
__device__ __forceinline__ void vjp_scalars_warp(const T* fi, const T* yi, double ai, double D, const T* gi,
                                                 T* ci, T* ui, T* gei, long k, int lane) {
  double ge = 0;
  for (long j = lane; j < k; j += kWarp) {
    const double gj = double(gi[j]);
    ge += gj * (double(yi[j]) - double(fi[j]));
    ui[j] = T(gj / D);
  }
  ge = warp_sum(ge);
  if (lane == 0) {
    *ci = T(ai * ge / D);
    *gei = T(ge);
  }
}

template <typename T>
__global__ void loo_rows_kernel(const T* __restrict__ z, const T* __restrict__ yhat, const T* __restrict__ y,
                                const T* __restrict__ a, T* __restrict__ f, T* __restrict__ h,
                                long b, long d, long k) {
  int lane;
  const long i = warp_row(lane);
  if (i >= b) return;
  double hh, D;
  loo_row_warp(z + i * d, yhat + i * k, y + i * k, double(a[i]), f + i * k, d, k, lane, hh, D);
  if (lane == 0) h[i] = T(hh);
}

template <typename T>
__global__ void loss_grad_kernel(const T* __restrict__ f, const T* __restrict__ y, const T* __restrict__ w,
                                 int kind, T* __restrict__ g, double* __restrict__ loss, long b, long k) {
  int lane;
  const long i = warp_row(lane);
  if (i >= b) return;
  const double l = loss_row_warp(f + i * k, y + i * k, double(w[i]), kind, g + i * k, k, lane);
  if (lane == 0) loss[i] = l;
}

template <typename T>
__global__ void vjp_scalars_kernel(const T* __restrict__ f, const T* __restrict__ y, const T* __restrict__ a,
                                   const T* __restrict__ h, const T* __restrict__ g, T* __restrict__ c,
                                   T* __restrict__ u, T* __restrict__ ge, long b, long k) {
  int lane;
  const long i = warp_row(lane);
  if (i >= b) return;
  const double ai = double(a[i]);
  vjp_scalars_warp(f + i * k, y + i * k, ai, 1.0 - ai * double(h[i]), g + i * k, c + i, u + i * k, ge + i, k,
                   lane);
}

// The fused pass. f and g of a row are written and re-read by the same warp: __syncwarp orders
// those global-memory accesses between its lanes.
template <typename T>
__global__ void loo_grad_kernel(const T* __restrict__ z, const T* __restrict__ yhat, const T* __restrict__ y,
                                const T* __restrict__ a, const T* __restrict__ w, int kind, T* __restrict__ f,
                                T* __restrict__ h, T* __restrict__ g, double* __restrict__ loss,
                                T* __restrict__ c, T* __restrict__ u, T* __restrict__ ge, long b, long d,
                                long k) {
  int lane;
  const long i = warp_row(lane);
  if (i >= b) return;
  const double ai = double(a[i]);
  double hh, D;
  T* fi = f + i * k;
  T* gi = g + i * k;
  loo_row_warp(z + i * d, yhat + i * k, y + i * k, ai, fi, d, k, lane, hh, D);
  __syncwarp();
  const double l = loss_row_warp(fi, y + i * k, double(w[i]), kind, gi, k, lane);
  __syncwarp();
  vjp_scalars_warp(fi, y + i * k, ai, D, gi, c + i, u + i * k, ge + i, k, lane);
  if (lane == 0) {
    h[i] = T(hh);
    loss[i] = l;
  }
}

template <typename T>
__global__ void vjp_rows_kernel(const T* __restrict__ o, const double* __restrict__ lam, const T* __restrict__ f,
                                const T* __restrict__ y, const T* __restrict__ a, const T* __restrict__ h,
                                const T* __restrict__ ge_in, T* __restrict__ grad, long b, long d, long k) {
  int lane;
  const long i = warp_row(lane);
  if (i >= b) return;
  const T* oi = o + i * (d + k);
  double q = 0;
  for (long m = lane; m < d; m += kWarp) q += lam[m] * double(oi[m]) * double(oi[m]);
  double pe = 0;
  for (long c = lane; c < k; c += kWarp) pe += double(oi[d + c]) * (double(y[i * k + c]) - double(f[i * k + c]));
  q = warp_sum(q);
  pe = warp_sum(pe);
  if (lane == 0) {
    const double hh = double(h[i]), ai = double(a[i]), D = 1.0 - ai * hh, ge = double(ge_in[i]);
    grad[i] = T(D * pe + q - hh * ge - ai * ge * hh * hh / D);
  }
}

template <typename T>
__global__ void val_rows_kernel(const T* __restrict__ xwp, const T* __restrict__ y, T* __restrict__ grad,
                                long b, long k) {
  int lane;
  const long i = warp_row(lane);
  if (i >= b) return;
  const T* o = xwp + i * 2 * k;
  double s = 0;
  for (long c = lane; c < k; c += kWarp) s += double(o[k + c]) * (double(y[i * k + c]) - double(o[c]));
  s = warp_sum(s);
  if (lane == 0) grad[i] = T(s);
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
  DIVAEXT_LAUNCH(loo_rows_kernel<T>, b, stream, z, yhat, y, a, f, h, b, d, k);
}

template <typename T>
cudaError_t launch_loss_grad(const T* f, const T* y, const T* w, int kind, T* g, double* loss, long b, long k,
                             cudaStream_t stream) {
  DIVAEXT_LAUNCH(loss_grad_kernel<T>, b, stream, f, y, w, kind, g, loss, b, k);
}

template <typename T>
cudaError_t launch_vjp_scalars(const T* f, const T* y, const T* a, const T* h, const T* g, T* c, T* u, T* ge,
                               long b, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH(vjp_scalars_kernel<T>, b, stream, f, y, a, h, g, c, u, ge, b, k);
}

template <typename T>
cudaError_t launch_loo_grad(const T* z, const T* yhat, const T* y, const T* a, const T* w, int kind, T* f, T* h,
                            T* g, double* loss, T* c, T* u, T* ge, long b, long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH(loo_grad_kernel<T>, b, stream, z, yhat, y, a, w, kind, f, h, g, loss, c, u, ge, b, d, k);
}

template <typename T>
cudaError_t launch_vjp_rows(const T* o, const double* lam, const T* f, const T* y, const T* a, const T* h,
                            const T* ge, T* grad, long b, long d, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH(vjp_rows_kernel<T>, b, stream, o, lam, f, y, a, h, ge, grad, b, d, k);
}

template <typename T>
cudaError_t launch_val_rows(const T* xwp, const T* y, T* grad, long b, long k, cudaStream_t stream) {
  DIVAEXT_LAUNCH(val_rows_kernel<T>, b, stream, xwp, y, grad, b, k);
}

#define DIVAEXT_INSTANTIATE(T)                                                                              \
  template cudaError_t launch_loo_rows<T>(const T*, const T*, const T*, const T*, T*, T*, long, long, long, \
                                          cudaStream_t);                                                    \
  template cudaError_t launch_loss_grad<T>(const T*, const T*, const T*, int, T*, double*, long, long,      \
                                           cudaStream_t);                                                   \
  template cudaError_t launch_vjp_scalars<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*,  \
                                             long, long, cudaStream_t);                                     \
  template cudaError_t launch_loo_grad<T>(const T*, const T*, const T*, const T*, const T*, int, T*, T*, T*, \
                                          double*, T*, T*, T*, long, long, long, cudaStream_t);             \
  template cudaError_t launch_vjp_rows<T>(const T*, const double*, const T*, const T*, const T*, const T*,  \
                                          const T*, T*, long, long, long, cudaStream_t);                    \
  template cudaError_t launch_val_rows<T>(const T*, const T*, T*, long, long, cudaStream_t);

DIVAEXT_INSTANTIATE(float)
DIVAEXT_INSTANTIATE(double)

}  // namespace divaext::cuda
