// CUDA implementations of every divaext op: the device-generic passes (passes.h, whose block
// products go to cuBLAS through ATen) with the row kernels of row_kernels.cu, launched on the
// current stream under a device guard. Built only against a CUDA-enabled torch.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/row_kernels.cuh"
#include "passes.h"

namespace divaext::cuda {
namespace {
template <typename T>
T* ptr(const at::Tensor& t) { return t.data_ptr<T>(); }
}  // namespace

struct RowKernels {
  static void loo_rows(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y, const at::Tensor& a,
                       at::Tensor f, at::Tensor h) {
    const c10::cuda::CUDAGuard guard(z.device());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_rows_cuda", [&] {
      C10_CUDA_CHECK(launch_loo_rows<scalar_t>(ptr<scalar_t>(z), ptr<scalar_t>(yhat), ptr<scalar_t>(y),
                                               ptr<scalar_t>(a), ptr<scalar_t>(f), ptr<scalar_t>(h), z.size(0),
                                               z.size(1), y.size(1), stream));
    });
  }
  static void loss_grad(const at::Tensor& f, const at::Tensor& y, const at::Tensor& w, int64_t kind,
                        at::Tensor g, at::Tensor loss) {
    const c10::cuda::CUDAGuard guard(f.device());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_loss_grad_cuda", [&] {
      C10_CUDA_CHECK(launch_loss_grad<scalar_t>(ptr<scalar_t>(f), ptr<scalar_t>(y), ptr<scalar_t>(w), int(kind),
                                                ptr<scalar_t>(g), ptr<double>(loss), f.size(0), f.size(1),
                                                stream));
    });
  }
  static void vjp_scalars(const at::Tensor& f, const at::Tensor& y, const at::Tensor& a, const at::Tensor& h,
                          const at::Tensor& g, at::Tensor c, at::Tensor u, at::Tensor ge) {
    const c10::cuda::CUDAGuard guard(f.device());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_scalars_cuda", [&] {
      C10_CUDA_CHECK(launch_vjp_scalars<scalar_t>(ptr<scalar_t>(f), ptr<scalar_t>(y), ptr<scalar_t>(a),
                                                  ptr<scalar_t>(h), ptr<scalar_t>(g), ptr<scalar_t>(c),
                                                  ptr<scalar_t>(u), ptr<scalar_t>(ge), f.size(0), f.size(1),
                                                  stream));
    });
  }
  static void loo_grad(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y, const at::Tensor& a,
                       const at::Tensor& w, int64_t kind, at::Tensor f, at::Tensor h, at::Tensor g, at::Tensor loss,
                       at::Tensor c, at::Tensor u, at::Tensor ge) {
    const c10::cuda::CUDAGuard guard(z.device());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_grad_cuda", [&] {
      C10_CUDA_CHECK(launch_loo_grad<scalar_t>(ptr<scalar_t>(z), ptr<scalar_t>(yhat), ptr<scalar_t>(y),
                                               ptr<scalar_t>(a), ptr<scalar_t>(w), int(kind), ptr<scalar_t>(f),
                                               ptr<scalar_t>(h), ptr<scalar_t>(g), ptr<double>(loss),
                                               ptr<scalar_t>(c), ptr<scalar_t>(u), ptr<scalar_t>(ge), z.size(0),
                                               z.size(1), y.size(1), stream));
    });
  }
  static void vjp_rows(const at::Tensor& o, const at::Tensor& eigenvalues, const at::Tensor& f, const at::Tensor& y,
                       const at::Tensor& a, const at::Tensor& h, const at::Tensor& ge, at::Tensor grad) {
    const c10::cuda::CUDAGuard guard(f.device());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_rows_cuda", [&] {
      C10_CUDA_CHECK(launch_vjp_rows<scalar_t>(ptr<scalar_t>(o), ptr<double>(eigenvalues), ptr<scalar_t>(f),
                                               ptr<scalar_t>(y), ptr<scalar_t>(a), ptr<scalar_t>(h),
                                               ptr<scalar_t>(ge), ptr<scalar_t>(grad), f.size(0),
                                               eigenvalues.size(0), f.size(1), stream));
    });
  }
  static void val_rows(const at::Tensor& xwp, const at::Tensor& y, at::Tensor grad) {
    const c10::cuda::CUDAGuard guard(y.device());
    const auto stream = c10::cuda::getCurrentCUDAStream().stream();
    const auto o = xwp.contiguous();
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "divaext_val_rows_cuda", [&] {
      C10_CUDA_CHECK(launch_val_rows<scalar_t>(ptr<scalar_t>(o), ptr<scalar_t>(y), ptr<scalar_t>(grad), y.size(0),
                                               y.size(1), stream));
    });
  }
};

}  // namespace divaext::cuda

TORCH_LIBRARY_IMPL(divaext, CUDA, m) { DIVAEXT_REGISTER_PASSES(m, ::divaext::cuda::RowKernels); }
