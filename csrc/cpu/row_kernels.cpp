#include "cpu/row_kernels.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "cpu/serial_row.h"
#include "row_math.h"

namespace divaext::cpu {
namespace {
// Rows per parallel chunk: a row is O(d + k) work, so small chunks already amortise the fork.
constexpr int64_t kGrain = 256;
// Columns per parallel chunk of scatter_rows: each chunk walks every row of the block, so a
// chunk must be long enough (here 512 bytes of float64) to outweigh that walk.
constexpr int64_t kColumnGrain = 64;

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

// body(targets) with the block's targets as the formulas read them (targets.h): class indices
// [b] int64, or a dense [b,k] matrix in T. Both kinds run the same formula.
template <typename T, class F>
void with_targets(const at::Tensor& y, int64_t k, F&& body) {
  static_assert(sizeof(long) == sizeof(int64_t), "class indices are read as long");
  if (y.scalar_type() == at::kLong) {
    body(rows::LabelTargets{reinterpret_cast<const long*>(ptr<int64_t>(y))});
  } else {
    body(rows::DenseTargets<T>{ptr<T>(y), long(k)});
  }
}
}  // namespace

void RowKernels::loo_rows(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y,
                          const at::Tensor& a, at::Tensor f, at::Tensor h) {
  const int64_t b = z.size(0), d = z.size(1), k = yhat.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_rows_cpu", [&] {
    const scalar_t *Z = ptr<scalar_t>(z), *YH = ptr<scalar_t>(yhat), *A = ptr<scalar_t>(a);
    scalar_t *F = ptr<scalar_t>(f), *H = ptr<scalar_t>(h);
    with_targets<scalar_t>(y, k, [&](auto Y) {
      for_rows(b, [&](const SerialRow& r, int64_t i) {
        rows::loo_row(r, Z + i * d, YH + i * k, Y.row(i), A[i], F + i * k, H + i, d, k);
      });
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
      rows::loss_row(r, int(kind), F + i * k, rows::DenseRow<scalar_t>{Y + i * k}, W[i], G + i * k, L + i, k);
    });
  });
}

void RowKernels::loss_rows(const at::Tensor& f, const at::Tensor& y, int64_t kind, at::Tensor loss) {
  const int64_t m = f.size(0) * f.size(1), per = f.size(1), k = f.size(2);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_loss_rows_cpu", [&] {
    const scalar_t *F = ptr<scalar_t>(f), *Y = ptr<scalar_t>(y);
    double* L = ptr<double>(loss);
    for_rows(m, [&](const SerialRow& r, int64_t i) {
      rows::loss_row(r, int(kind), F + i * k, rows::DenseRow<scalar_t>{Y + i / per * k}, scalar_t(1), rows::Discard{},
                     L + i, k);
    });
  });
}

void RowKernels::vjp_scalars(const at::Tensor& f, const at::Tensor& y, const at::Tensor& a,
                             const at::Tensor& h, const at::Tensor& g, at::Tensor c, at::Tensor u,
                             at::Tensor ge) {
  const int64_t b = f.size(0), k = f.size(1);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_scalars_cpu", [&] {
    const scalar_t *F = ptr<scalar_t>(f), *A = ptr<scalar_t>(a), *H = ptr<scalar_t>(h), *G = ptr<scalar_t>(g);
    scalar_t *C = ptr<scalar_t>(c), *U = ptr<scalar_t>(u), *GE = ptr<scalar_t>(ge);
    with_targets<scalar_t>(y, k, [&](auto Y) {
      for_rows(b, [&](const SerialRow& r, int64_t i) {
        rows::vjp_scalars_row(r, F + i * k, Y.row(i), A[i], H[i], G + i * k, C + i, U + i * k, GE + i, k);
      });
    });
  });
}

void RowKernels::loo_grad(const at::Tensor& z, const at::Tensor& yhat, const at::Tensor& y,
                          const at::Tensor& a, const at::Tensor& w, int64_t kind, at::Tensor f, at::Tensor h,
                          at::Tensor g, at::Tensor loss, at::Tensor c, at::Tensor u, at::Tensor ge,
                          at::Tensor resid) {
  const int64_t b = z.size(0), d = z.size(1), k = yhat.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "divaext_loo_grad_cpu", [&] {
    const scalar_t *Z = ptr<scalar_t>(z), *YH = ptr<scalar_t>(yhat), *A = ptr<scalar_t>(a), *W = ptr<scalar_t>(w);
    scalar_t *F = ptr<scalar_t>(f), *H = ptr<scalar_t>(h), *G = ptr<scalar_t>(g), *C = ptr<scalar_t>(c),
             *U = ptr<scalar_t>(u), *GE = ptr<scalar_t>(ge), *RS = ptr<scalar_t>(resid);
    double* L = ptr<double>(loss);
    with_targets<scalar_t>(y, k, [&](auto Y) {
      for_rows(b, [&](const SerialRow& r, int64_t i) {
        rows::loo_grad_row(r, Z + i * d, YH + i * k, Y.row(i), A[i], W[i], int(kind), F + i * k, H + i, G + i * k,
                           L + i, C + i, U + i * k, GE + i, RS + i, d, k);
      });
    });
  });
}

void RowKernels::vjp_rows(const at::Tensor& o, const at::Tensor& eigenvalues, const at::Tensor& f,
                          const at::Tensor& y, const at::Tensor& a, const at::Tensor& h, const at::Tensor& ge,
                          at::Tensor grad) {
  const int64_t b = f.size(0), k = f.size(1), d = eigenvalues.size(0);
  const double* lam = ptr<double>(eigenvalues);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "divaext_vjp_rows_cpu", [&] {
    const scalar_t *O = ptr<scalar_t>(o), *F = ptr<scalar_t>(f), *A = ptr<scalar_t>(a), *H = ptr<scalar_t>(h),
                   *GE = ptr<scalar_t>(ge);
    scalar_t* R = ptr<scalar_t>(grad);
    with_targets<scalar_t>(y, k, [&](auto Y) {
      for_rows(b, [&](const SerialRow& r, int64_t i) {
        rows::vjp_row(r, O + i * (d + k), lam, F + i * k, Y.row(i), A[i], H[i], GE[i], R + i, d, k);
      });
    });
  });
}

void RowKernels::vjp_fit(const at::Tensor& o, const at::Tensor& eigenvalues, const at::Tensor& y,
                         const at::Tensor& a, const at::Tensor& h, const at::Tensor& ge, at::Tensor grad) {
  const int64_t b = o.size(0), d = eigenvalues.size(0), k = (o.size(1) - d) / 2;
  const double* lam = ptr<double>(eigenvalues);
  AT_DISPATCH_FLOATING_TYPES(o.scalar_type(), "divaext_vjp_fit_cpu", [&] {
    const scalar_t *O = ptr<scalar_t>(o), *A = ptr<scalar_t>(a), *H = ptr<scalar_t>(h), *GE = ptr<scalar_t>(ge);
    scalar_t* R = ptr<scalar_t>(grad);
    with_targets<scalar_t>(y, k, [&](auto Y) {
      for_rows(b, [&](const SerialRow& r, int64_t i) {
        rows::vjp_fit_row(r, O + i * (d + 2 * k), lam, Y.row(i), A[i], H[i], GE[i], R + i, d, k);
      });
    });
  });
}

void RowKernels::val_rows(const at::Tensor& xwp, const at::Tensor& y, at::Tensor grad) {
  const int64_t b = xwp.size(0), k = xwp.size(1) / 2;
  AT_DISPATCH_FLOATING_TYPES(xwp.scalar_type(), "divaext_val_rows_cpu", [&] {
    const scalar_t* O = ptr<scalar_t>(xwp);
    scalar_t* R = ptr<scalar_t>(grad);
    with_targets<scalar_t>(y, k, [&](auto Y) {
      for_rows(b, [&](const SerialRow& r, int64_t i) { rows::val_row(r, O + i * 2 * k, Y.row(i), R + i, k); });
    });
  });
}

// The threads split the columns, not the rows: each element of Bᵀ is then added by one thread
// in row order, as a serial loop adds it, so the result is bitwise the same for any number of
// threads and from run to run (a split by rows would need per-thread k×d partials and their
// sum in a fixed order: k·d·threads memory). A row's slice of a chunk is contiguous.
void RowKernels::scatter_rows(const at::Tensor& xa, const at::Tensor& labels, at::Tensor Bt) {
  const int64_t b = xa.size(0), d = xa.size(1);
  const int64_t* L = ptr<int64_t>(labels);
  double* B = ptr<double>(Bt);
  AT_DISPATCH_FLOATING_TYPES(xa.scalar_type(), "divaext_scatter_rows_cpu", [&] {
    const scalar_t* X = ptr<scalar_t>(xa);
    at::parallel_for(0, d, kColumnGrain, [&](int64_t j0, int64_t j1) {
      for (int64_t i = 0; i < b; ++i) {
        const scalar_t* xi = X + i * d;
        double* bi = B + L[i] * d;
        for (int64_t j = j0; j < j1; ++j) bi[j] += double(xi[j]);
      }
    });
  });
}

}  // namespace divaext::cpu
