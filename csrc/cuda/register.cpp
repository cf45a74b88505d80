// CUDA implementations of every divaext op: the device-generic passes (passes.h, whose block
// products go to cuBLAS through ATen) with the row kernels of row_kernels.cu, launched on the
// current stream under a device guard. Built only against a CUDA-enabled torch. Shapes in
// comments (b = rows in the block), dtype that of the features unless marked float64.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
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
  static void loo_rows(const at::Tensor& z /*[b,d]*/, const at::Tensor& yhat /*[b,k]*/, const at::Tensor& y /*[b,k]*/,
                       const at::Tensor& a /*[b]*/, at::Tensor f /*[b,k] out*/, at::Tensor h /*[b] out*/) {
    on_stream(z, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_loo_rows<T>(ptr<T>(z), ptr<T>(yhat), ptr<T>(y), ptr<T>(a), ptr<T>(f), ptr<T>(h), z.size(0),
                                z.size(1), y.size(1), s);
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
  static void vjp_scalars(const at::Tensor& f /*[b,k]*/, const at::Tensor& y /*[b,k]*/, const at::Tensor& a /*[b]*/,
                          const at::Tensor& h /*[b]*/, const at::Tensor& g /*[b,k]*/, at::Tensor c /*[b] out*/,
                          at::Tensor u /*[b,k] out*/, at::Tensor ge /*[b] out*/) {
    on_stream(f, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_vjp_scalars<T>(ptr<T>(f), ptr<T>(y), ptr<T>(a), ptr<T>(h), ptr<T>(g), ptr<T>(c), ptr<T>(u),
                                   ptr<T>(ge), f.size(0), f.size(1), s);
    });
  }
  static void loo_grad(const at::Tensor& z /*[b,d]*/, const at::Tensor& yhat /*[b,k]*/, const at::Tensor& y /*[b,k]*/,
                       const at::Tensor& a /*[b]*/, const at::Tensor& w /*[b]*/, int64_t kind,
                       at::Tensor f /*[b,k] out*/, at::Tensor h /*[b] out*/, at::Tensor g /*[b,k] scratch*/,
                       at::Tensor loss /*[b] float64 out*/, at::Tensor c /*[b] out*/, at::Tensor u /*[b,k] out*/,
                       at::Tensor ge /*[b] out*/) {
    on_stream(z, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_loo_grad<T>(ptr<T>(z), ptr<T>(yhat), ptr<T>(y), ptr<T>(a), ptr<T>(w), int(kind), ptr<T>(f),
                                ptr<T>(h), ptr<T>(g), ptr<double>(loss), ptr<T>(c), ptr<T>(u), ptr<T>(ge),
                                z.size(0), z.size(1), y.size(1), s);
    });
  }
  static void vjp_rows(const at::Tensor& o /*[b,d+k]*/, const at::Tensor& lam /*[d] float64: eigenvalues*/,
                       const at::Tensor& f /*[b,k]*/, const at::Tensor& y /*[b,k]*/, const at::Tensor& a /*[b]*/,
                       const at::Tensor& h /*[b]*/, const at::Tensor& ge /*[b]*/, at::Tensor grad /*[b] out*/) {
    on_stream(f, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_vjp_rows<T>(ptr<T>(o), ptr<double>(lam), ptr<T>(f), ptr<T>(y), ptr<T>(a), ptr<T>(h),
                                ptr<T>(ge), ptr<T>(grad), f.size(0), lam.size(0), f.size(1), s);
    });
  }
  static void val_rows(const at::Tensor& xwp /*[b,2k]*/, const at::Tensor& y /*[b,k]*/, at::Tensor grad /*[b] out*/) {
    on_stream(y, [&](auto t, cudaStream_t s) {
      using T = decltype(t);
      return launch_val_rows<T>(ptr<T>(xwp), ptr<T>(y), ptr<T>(grad), y.size(0), y.size(1), s);
    });
  }
};

}  // namespace divaext::cuda

TORCH_LIBRARY_IMPL(divaext, CUDA, m) { DIVAEXT_REGISTER_PASSES(m, ::divaext::cuda::RowKernels); }
