#include "cpu/row_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "row_math.h"

namespace divaext::cpu {
namespace {
// Rows per parallel chunk: a row is O(d + k) work, so small chunks already amortise the fork.
constexpr int64_t kGrain = 256;

template <class F>
void for_rows(int64_t b, F&& f) {
  at::parallel_for(0, b, kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(i);
  });
}
}  // namespace

void RowKernels::loo_rows(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y,
                          const at::Tensor& a, at::Tensor f, at::Tensor h) {
  const int64_t b = z.size(0), d = z.size(1), k = y.size(1);
  const auto zc = z.contiguous();  // z may be a leading slice of a larger buffer: still contiguous
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_rows_cpu", [&] {
    const scalar_t *Z = zc.data_ptr<scalar_t>(), *YH = yhat.data_ptr<scalar_t>(),
                   *Y = y.data_ptr<scalar_t>(), *A = a.data_ptr<scalar_t>();
    scalar_t *F = f.data_ptr<scalar_t>(), *H = h.data_ptr<scalar_t>();
    for_rows(b, [&](int64_t i) {
      rows::loo_row(Z + i * d, YH + i * k, Y + i * k, A[i], F + i * k, H + i, d, k);
    });
  });
}

void RowKernels::loss_grad(const at::Tensor& f, const at::Tensor& y, const at::Tensor& w,
                           int64_t kind, at::Tensor g, at::Tensor loss) {
  const int64_t n = f.size(0), k = f.size(1);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_loss_grad_cpu", [&] {
    const scalar_t *F = f.data_ptr<scalar_t>(), *Y = y.data_ptr<scalar_t>(), *W = w.data_ptr<scalar_t>();
    scalar_t* G = g.data_ptr<scalar_t>();
    double* Lr = loss.data_ptr<double>();
    for_rows(n, [&](int64_t i) {
      Lr[i] = rows::loss_row(F + i * k, Y + i * k, W[i], int(kind), G + i * k, k);
    });
  });
}

void RowKernels::vjp_scalars(const at::Tensor& f, const at::Tensor& y, const at::Tensor& a,
                             const at::Tensor& h, const at::Tensor& g, at::Tensor c, at::Tensor u,
                             at::Tensor ge) {
  const int64_t b = f.size(0), k = f.size(1);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_scalars_cpu", [&] {
    const scalar_t *F = f.data_ptr<scalar_t>(), *Y = y.data_ptr<scalar_t>(), *A = a.data_ptr<scalar_t>(),
                   *H = h.data_ptr<scalar_t>(), *G = g.data_ptr<scalar_t>();
    scalar_t *C = c.data_ptr<scalar_t>(), *U = u.data_ptr<scalar_t>(), *GE = ge.data_ptr<scalar_t>();
    for_rows(b, [&](int64_t i) {
      rows::vjp_scalars_row(F + i * k, Y + i * k, A[i], H[i], G + i * k, C + i, U + i * k, GE + i, k);
    });
  });
}

void RowKernels::loo_grad(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y,
                          const at::Tensor& a, const at::Tensor& w, int64_t kind, at::Tensor f, at::Tensor h,
                          at::Tensor g, at::Tensor loss, at::Tensor c, at::Tensor u, at::Tensor ge) {
  const int64_t b = z.size(0), d = z.size(1), k = y.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_grad_cpu", [&] {
    const scalar_t *Z = z.data_ptr<scalar_t>(), *YH = yhat.data_ptr<scalar_t>(), *Y = y.data_ptr<scalar_t>(),
                   *A = a.data_ptr<scalar_t>(), *W = w.data_ptr<scalar_t>();
    scalar_t *F = f.data_ptr<scalar_t>(), *H = h.data_ptr<scalar_t>(), *G = g.data_ptr<scalar_t>(),
             *C = c.data_ptr<scalar_t>(), *U = u.data_ptr<scalar_t>(), *GE = ge.data_ptr<scalar_t>();
    double* Lr = loss.data_ptr<double>();
    for_rows(b, [&](int64_t i) {
      rows::loo_row(Z + i * d, YH + i * k, Y + i * k, A[i], F + i * k, H + i, d, k);
      Lr[i] = rows::loss_row(F + i * k, Y + i * k, W[i], int(kind), G + i * k, k);
      rows::vjp_scalars_row(F + i * k, Y + i * k, A[i], H[i], G + i * k, C + i, U + i * k, GE + i, k);
    });
  });
}

void RowKernels::vjp_rows(const at::Tensor& o, const at::Tensor& eigenvalues, const at::Tensor& f,
                          const at::Tensor& y, const at::Tensor& a, const at::Tensor& h, const at::Tensor& ge,
                          at::Tensor grad) {
  const int64_t b = f.size(0), k = f.size(1), d = eigenvalues.size(0);
  const double* lam = eigenvalues.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_rows_cpu", [&] {
    const scalar_t *O = o.data_ptr<scalar_t>(), *F = f.data_ptr<scalar_t>(), *Y = y.data_ptr<scalar_t>(),
                   *A = a.data_ptr<scalar_t>(), *H = h.data_ptr<scalar_t>(), *GE = ge.data_ptr<scalar_t>();
    scalar_t* R = grad.data_ptr<scalar_t>();
    for_rows(b, [&](int64_t i) {
      R[i] = rows::vjp_row(O + i * (d + k), lam, F + i * k, Y + i * k, A[i], H[i], GE[i], d, k);
    });
  });
}

void RowKernels::val_rows(const at::Tensor& xwp, const at::Tensor& y, at::Tensor grad) {
  const int64_t b = y.size(0), k = y.size(1);
  const auto o = xwp.contiguous();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "divaext_val_rows_cpu", [&] {
    const scalar_t *O = o.data_ptr<scalar_t>(), *Y = y.data_ptr<scalar_t>();
    scalar_t* R = grad.data_ptr<scalar_t>();
    for_rows(b, [&](int64_t i) { R[i] = rows::val_row(O + i * 2 * k, Y + i * k, k); });
  });
}

}  // namespace divaext::cpu
