// CUDA implementations of every divaext op: the device-generic passes (passes.h, whose block
// products go to cuBLAS through ATen) with the row kernels of row_kernels.cu, launched on the
// current stream under a device guard. Built only against a CUDA-enabled torch. Shapes in
// comments (b = rows in the block), dtype the features' compute dtype unless marked float64;
// targets y [b,k] | [b]: dense in that dtype, or class indices int64 (the *_labels launchers).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/index_put.h>
#include <torch/library.h>

#include "cuda/row_kernels.cuh"
#include "passes.h"

namespace divaext::cuda {
namespace {
// The kernels index rows as row-major: the passes hand over contiguous tensors, and this is
// where that contract is held.
template <typename T>
T* ptr(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.is_contiguous(), "divaext: a CUDA row kernel got a non-contiguous tensor");
  return t.data_ptr<T>();
}

// Targets y of a row kernel: class indices [b] int64 go to the *_labels launchers, as long.
bool is_labels(const at::Tensor& y) { return y.scalar_type() == at::kLong; }
const long* labels_of(const at::Tensor& y) {
  static_assert(sizeof(long) == sizeof(int64_t), "class indices are read as long");
  return reinterpret_cast<const long*>(ptr<int64_t>(y));
}

// launch(T{}, stream) for t's dtype T, under t's device guard on the current stream; raises
// the launch's CUDA error. The passes have checked the dtype (checks.h).
template <class F>
void on_stream(const at::Tensor& t, F&& launch) {
  const c10::cuda::CUDAGuard guard(t.device());
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  switch (t.scalar_type()) {
    case at::kFloat: C10_CUDA_CHECK(launch(float{}, stream)); break;
    case at::kDouble: C10_CUDA_CHECK(launch(double{}, stream)); break;
    default: TORCH_INTERNAL_ASSERT(false, "divaext: CUDA row kernel for ", t.scalar_type());
  }
}
}  // namespace

struct RowKernels {
  static void loo_rows(const at::Tensor& z /*[b,d]*/, const at::Tensor& yhat /*[b,k]*/,
                       const at::Tensor& y /*[b,k] | [b]*/,
                       const at::Tensor& a /*[b]*/, at::Tensor f /*[b,k] out*/, at::Tensor h /*[b] out*/) {
    on_stream(z, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      const long b = z.size(0), d = z.size(1), k = yhat.size(1);
      return is_labels(y) ? launch_loo_rows_labels<T>(ptr<T>(z), ptr<T>(yhat), labels_of(y), ptr<T>(a), ptr<T>(f),
                                                      ptr<T>(h), b, d, k, s)
                          : launch_loo_rows<T>(ptr<T>(z), ptr<T>(yhat), ptr<T>(y), ptr<T>(a), ptr<T>(f), ptr<T>(h), b,
                                               d, k, s);
    });
  }
  static void loss_grad(const at::Tensor& f /*[b,k]*/, const at::Tensor& y /*[b,k]*/, const at::Tensor& w /*[b]*/,
                        int64_t kind /*code in losses.h*/, at::Tensor g /*[b,k] out*/,
                        at::Tensor loss /*[b] float64 out*/) {
    on_stream(f, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_loss_grad<T>(ptr<T>(f), ptr<T>(y), ptr<T>(w), int(kind), ptr<T>(g), ptr<double>(loss),
                                 f.size(0), f.size(1), s);
    });
  }
  static void loss_rows(const at::Tensor& f /*[n,G,k]*/, const at::Tensor& y /*[n,k]*/, int64_t kind,
                        at::Tensor loss /*[n,G] float64 out*/) {
    on_stream(f, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_loss_rows<T>(ptr<T>(f), ptr<T>(y), int(kind), ptr<double>(loss), f.size(0), f.size(1),
                                 f.size(2), s);
    });
  }
  static void vjp_scalars(const at::Tensor& f /*[b,k]*/, const at::Tensor& y /*[b,k] | [b]*/,
                          const at::Tensor& a /*[b]*/,
                          const at::Tensor& h /*[b]*/, const at::Tensor& g /*[b,k]*/, at::Tensor c /*[b] out*/,
                          at::Tensor u /*[b,k] out*/, at::Tensor ge /*[b] out*/) {
    on_stream(f, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      const long b = f.size(0), k = f.size(1);
      return is_labels(y) ? launch_vjp_scalars_labels<T>(ptr<T>(f), labels_of(y), ptr<T>(a), ptr<T>(h), ptr<T>(g),
                                                         ptr<T>(c), ptr<T>(u), ptr<T>(ge), b, k, s)
                          : launch_vjp_scalars<T>(ptr<T>(f), ptr<T>(y), ptr<T>(a), ptr<T>(h), ptr<T>(g), ptr<T>(c),
                                                  ptr<T>(u), ptr<T>(ge), b, k, s);
    });
  }
  static void loo_grad(const at::Tensor& z /*[b,d]*/, const at::Tensor& yhat /*[b,k]*/,
                       const at::Tensor& y /*[b,k] | [b]*/,
                       const at::Tensor& a /*[b]*/, const at::Tensor& w /*[b]*/, int64_t kind,
                       at::Tensor f /*[b,k] scratch*/, at::Tensor h /*[b] out*/, at::Tensor g /*[b,k] scratch*/,
                       at::Tensor loss /*[b] float64 out*/, at::Tensor c /*[b] out*/, at::Tensor u /*[b,k] out*/,
                       at::Tensor ge /*[b] out*/, at::Tensor resid /*[b] out*/) {
    on_stream(z, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      const long b = z.size(0), d = z.size(1), k = yhat.size(1);
      return is_labels(y) ? launch_loo_grad_labels<T>(ptr<T>(z), ptr<T>(yhat), labels_of(y), ptr<T>(a), ptr<T>(w),
                                                      int(kind), ptr<T>(f), ptr<T>(h), ptr<T>(g), ptr<double>(loss),
                                                      ptr<T>(c), ptr<T>(u), ptr<T>(ge), ptr<T>(resid), b, d, k, s)
                          : launch_loo_grad<T>(ptr<T>(z), ptr<T>(yhat), ptr<T>(y), ptr<T>(a), ptr<T>(w), int(kind),
                                               ptr<T>(f), ptr<T>(h), ptr<T>(g), ptr<double>(loss), ptr<T>(c),
                                               ptr<T>(u), ptr<T>(ge), ptr<T>(resid), b, d, k, s);
    });
  }
  static void vjp_rows(const at::Tensor& o /*[b,d+k]*/, const at::Tensor& eigenvalues /*[d] float64*/,
                       const at::Tensor& f /*[b,k]*/, const at::Tensor& y /*[b,k] | [b]*/,
                       const at::Tensor& a /*[b]*/,
                       const at::Tensor& h /*[b]*/, const at::Tensor& ge /*[b]*/, at::Tensor grad /*[b] out*/) {
    on_stream(f, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      const long b = f.size(0), d = eigenvalues.size(0), k = f.size(1);
      return is_labels(y) ? launch_vjp_rows_labels<T>(ptr<T>(o), ptr<double>(eigenvalues), ptr<T>(f), labels_of(y),
                                                      ptr<T>(a), ptr<T>(h), ptr<T>(ge), ptr<T>(grad), b, d, k, s)
                          : launch_vjp_rows<T>(ptr<T>(o), ptr<double>(eigenvalues), ptr<T>(f), ptr<T>(y), ptr<T>(a),
                                               ptr<T>(h), ptr<T>(ge), ptr<T>(grad), b, d, k, s);
    });
  }
  static void vjp_fit(const at::Tensor& o /*[b,d+2k]*/, const at::Tensor& eigenvalues /*[d] float64*/,
                      const at::Tensor& y /*[b,k] | [b]*/, const at::Tensor& a /*[b]*/, const at::Tensor& h /*[b]*/,
                      const at::Tensor& ge /*[b]*/, at::Tensor grad /*[b] out*/) {
    on_stream(o, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      const long b = o.size(0), d = eigenvalues.size(0), k = (o.size(1) - d) / 2;
      return is_labels(y) ? launch_vjp_fit_labels<T>(ptr<T>(o), ptr<double>(eigenvalues), labels_of(y), ptr<T>(a),
                                                     ptr<T>(h), ptr<T>(ge), ptr<T>(grad), b, d, k, s)
                          : launch_vjp_fit<T>(ptr<T>(o), ptr<double>(eigenvalues), ptr<T>(y), ptr<T>(a), ptr<T>(h),
                                              ptr<T>(ge), ptr<T>(grad), b, d, k, s);
    });
  }
  static void val_rows(const at::Tensor& xwp /*[b,2k]*/, const at::Tensor& y /*[b,k] | [b]*/,
                       at::Tensor grad /*[b] out*/) {
    on_stream(xwp, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      const long b = xwp.size(0), k = xwp.size(1) / 2;
      return is_labels(y) ? launch_val_rows_labels<T>(ptr<T>(xwp), labels_of(y), ptr<T>(grad), b, k, s)
                          : launch_val_rows<T>(ptr<T>(xwp), ptr<T>(y), ptr<T>(grad), b, k, s);
    });
  }
  // Pass 1's B with class indices: Bt[labels[i], :] += xa[i, :] in float64. ATen's index_put_
  // with accumulate on CUDA sorts the indices (a stable radix sort) and adds each run of equal
  // indices in that order, so the result is deterministic without atomics.
  static void scatter_rows(const at::Tensor& xa /*[b,d]*/, const at::Tensor& labels /*[b] int64*/,
                           at::Tensor Bt /*[k,d] float64 in/out*/) {
    Bt.index_put_({labels}, xa.to(at::kDouble), /*accumulate=*/true);
  }
};

}  // namespace divaext::cuda

TORCH_LIBRARY_IMPL(divaext, CUDA, m) { DIVAEXT_REGISTER_PASSES(m, ::divaext::cuda::RowKernels); }
