#include "cpu/row_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/serial_row.h"
#include "row_math.h"

namespace divaext::cpu {
namespace {
// Rows per parallel chunk: a row is O(d + k) work, so small chunks already amortise the fork.
constexpr int64_t kGrain = 256;

// f(SerialRow, i) for every row i in [0, b), rows spread over threads.
template <class F>
void for_rows(int64_t b, F&& f) {
  at::parallel_for(0, b, kGrain, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) f(SerialRow{}, i);
  });
}

// The row formulas index rows as row-major: the passes (passes.h) hand over contiguous
// tensors, and this is where that contract is held.
template <typename T>
T* ptr(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.is_contiguous(), "divaext: a CPU row kernel got a non-contiguous tensor");
  return t.data_ptr<T>();
}
}  // namespace

void RowKernels::loo_rows(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y,
                          const at::Tensor& a, at::Tensor f, at::Tensor h) {
  const int64_t b = z.size(0), d = z.size(1), k = y.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_rows_cpu", [&] {
    const scalar_t *Z = ptr<scalar_t>(z), *YH = ptr<scalar_t>(yhat), *Y = ptr<scalar_t>(y), *A = ptr<scalar_t>(a);
    scalar_t *F = ptr<scalar_t>(f), *H = ptr<scalar_t>(h);
    for_rows(b, [&](const SerialRow& r, int64_t i) {
      rows::loo_row(r, Z + i * d, YH + i * k, Y + i * k, A[i], F + i * k, H + i, d, k);
    });
  });
}

void RowKernels::loss_grad(const at::Tensor& f, const at::Tensor& y, const at::Tensor& w,
                           int64_t kind, at::Tensor g, at::Tensor loss) {
  const int64_t n = f.size(0), k = f.size(1);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_loss_grad_cpu", [&] {
    const scalar_t *F = ptr<scalar_t>(f), *Y = ptr<scalar_t>(y), *W = ptr<scalar_t>(w);
    scalar_t* G = ptr<scalar_t>(g);
    double* L = ptr<double>(loss);
    for_rows(n, [&](const SerialRow& r, int64_t i) {
      rows::loss_row(r, int(kind), F + i * k, Y + i * k, W[i], G + i * k, L + i, k);
    });
  });
}

void RowKernels::loss_rows(const at::Tensor& f, const at::Tensor& y, int64_t kind, at::Tensor loss) {
  const int64_t m = f.size(0) * f.size(1), per = f.size(1), k = f.size(2);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_loss_rows_cpu", [&] {
    const scalar_t *F = ptr<scalar_t>(f), *Y = ptr<scalar_t>(y);
    double* L = ptr<double>(loss);
    for_rows(m, [&](const SerialRow& r, int64_t i) {
      rows::loss_row(r, int(kind), F + i * k, Y + i / per * k, scalar_t(1), rows::Discard{}, L + i, k);
    });
  });
}

void RowKernels::vjp_scalars(const at::Tensor& f, const at::Tensor& y, const at::Tensor& a,
                             const at::Tensor& h, const at::Tensor& g, at::Tensor c, at::Tensor u,
                             at::Tensor ge) {
  const int64_t b = f.size(0), k = f.size(1);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_scalars_cpu", [&] {
    const scalar_t *F = ptr<scalar_t>(f), *Y = ptr<scalar_t>(y), *A = ptr<scalar_t>(a), *H = ptr<scalar_t>(h),
                   *G = ptr<scalar_t>(g);
    scalar_t *C = ptr<scalar_t>(c), *U = ptr<scalar_t>(u), *GE = ptr<scalar_t>(ge);
    for_rows(b, [&](const SerialRow& r, int64_t i) {
      rows::vjp_scalars_row(r, F + i * k, Y + i * k, A[i], H[i], G + i * k, C + i, U + i * k, GE + i, k);
    });
  });
}

void RowKernels::loo_grad(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y,
                          const at::Tensor& a, const at::Tensor& w, int64_t kind, at::Tensor f, at::Tensor h,
                          at::Tensor g, at::Tensor loss, at::Tensor c, at::Tensor u, at::Tensor ge) {
  const int64_t b = z.size(0), d = z.size(1), k = y.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_grad_cpu", [&] {
    const scalar_t *Z = ptr<scalar_t>(z), *YH = ptr<scalar_t>(yhat), *Y = ptr<scalar_t>(y), *A = ptr<scalar_t>(a),
                   *W = ptr<scalar_t>(w);
    scalar_t *F = ptr<scalar_t>(f), *H = ptr<scalar_t>(h), *G = ptr<scalar_t>(g), *C = ptr<scalar_t>(c),
             *U = ptr<scalar_t>(u), *GE = ptr<scalar_t>(ge);
    double* L = ptr<double>(loss);
    for_rows(b, [&](const SerialRow& r, int64_t i) {
      rows::loo_grad_row(r, Z + i * d, YH + i * k, Y + i * k, A[i], W[i], int(kind), F + i * k, H + i, G + i * k,
                         L + i, C + i, U + i * k, GE + i, d, k);
    });
  });
}

void RowKernels::vjp_rows(const at::Tensor& o, const at::Tensor& eigenvalues, const at::Tensor& f,
                          const at::Tensor& y, const at::Tensor& a, const at::Tensor& h, const at::Tensor& ge,
                          at::Tensor grad) {
  const int64_t b = f.size(0), k = f.size(1), d = eigenvalues.size(0);
  const double* lam = ptr<double>(eigenvalues);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_rows_cpu", [&] {
    const scalar_t *O = ptr<scalar_t>(o), *F = ptr<scalar_t>(f), *Y = ptr<scalar_t>(y), *A = ptr<scalar_t>(a),
                   *H = ptr<scalar_t>(h), *GE = ptr<scalar_t>(ge);
    scalar_t* R = ptr<scalar_t>(grad);
    for_rows(b, [&](const SerialRow& r, int64_t i) {
      rows::vjp_row(r, O + i * (d + k), lam, F + i * k, Y + i * k, A[i], H[i], GE[i], R + i, d, k);
    });
  });
}

void RowKernels::val_rows(const at::Tensor& xwp, const at::Tensor& y, at::Tensor grad) {
  const int64_t b = y.size(0), k = y.size(1);
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "divaext_val_rows_cpu", [&] {
    const scalar_t *O = ptr<scalar_t>(xwp), *Y = ptr<scalar_t>(y);
    scalar_t* R = ptr<scalar_t>(grad);
    for_rows(b, [&](const SerialRow& r, int64_t i) { rows::val_row(r, O + i * 2 * k, Y + i * k, R + i, k); });
  });
}

}  // namespace divaext::cpu
