// CPU row kernels: the per-row formulas of each pass (row_math.h, with the serial row reducer
// of serial_row.h) spread over rows with at::parallel_for. Every tensor argument is contiguous
// (asserted) and on the CPU; outputs are written in place. Shapes in comments; b = rows in the
// block; dtype T, the compute dtype of the features (float32 for float16/bfloat16 ones), unless
// marked float64. Targets y [b,k] | [b]: a [b,k] matrix in T, or class indices [b] int64
// (csrc/targets.h).
#pragma once
#include <ATen/core/Tensor.h>

namespace divaext::cpu {

struct RowKernels {
  static void loo_rows(const at::Tensor& z /*[b,d]*/, const at::Tensor& yhat /*[b,k]*/,
                       const at::Tensor& y /*[b,k] | [b]*/, const at::Tensor& a /*[b]*/,
                       at::Tensor f /*[b,k] out*/, at::Tensor h /*[b] out*/);
  static void loss_grad(const at::Tensor& f /*[n,k]*/, const at::Tensor& y /*[n,k]*/,
                        const at::Tensor& w /*[n]*/, int64_t kind /*code in losses.h*/, at::Tensor g /*[n,k] out*/,
                        at::Tensor loss /*[n] float64 out*/);
  // Unweighted losses of m = n·G prediction rows, G per target row: loss[i, j] of f[i, j] vs y[i].
  static void loss_rows(const at::Tensor& f /*[n,G,k]*/, const at::Tensor& y /*[n,k]*/, int64_t kind,
                        at::Tensor loss /*[n,G] float64 out*/);
  static void vjp_scalars(const at::Tensor& f /*[b,k]*/, const at::Tensor& y /*[b,k] | [b]*/,
                          const at::Tensor& a /*[b]*/, const at::Tensor& h /*[b]*/,
                          const at::Tensor& g /*[b,k]*/, at::Tensor c /*[b] out*/,
                          at::Tensor u /*[b,k] out*/, at::Tensor ge /*[b] out: g·e*/);
  // loo_rows + loss_grad + vjp_scalars of the same rows, in one sweep (the fused pass).
  static void loo_grad(const at::Tensor& z /*[b,d]*/, const at::Tensor& yhat /*[b,k]*/,
                       const at::Tensor& y /*[b,k] | [b]*/, const at::Tensor& a /*[b]*/,
                       const at::Tensor& w /*[b]*/, int64_t kind, at::Tensor f /*[b,k] scratch*/,
                       at::Tensor h /*[b] out*/, at::Tensor g /*[b,k] scratch*/,
                       at::Tensor loss /*[b] float64 out*/, at::Tensor c /*[b] out*/,
                       at::Tensor u /*[b,k] out*/, at::Tensor ge /*[b] out: g·e*/,
                       at::Tensor resid /*[b] out: max_c |y − ŷ|*/);
  static void vjp_rows(const at::Tensor& o /*[b,d+k] = x [tE | tP̃]*/,
                       const at::Tensor& eigenvalues /*[d] float64*/, const at::Tensor& f /*[b,k]*/,
                       const at::Tensor& y /*[b,k] | [b]*/, const at::Tensor& a /*[b]*/,
                       const at::Tensor& h /*[b]*/, const at::Tensor& ge /*[b] g·e*/,
                       at::Tensor grad /*[b] out*/);
  // Pass B without f: o = x [tE | tP̃ | tv] also holds the fit ŷ (row_math.h vjp_fit_row).
  static void vjp_fit(const at::Tensor& o /*[b,d+2k]*/, const at::Tensor& eigenvalues /*[d] float64*/,
                      const at::Tensor& y /*[b,k] | [b]*/, const at::Tensor& a /*[b]*/,
                      const at::Tensor& h /*[b]*/, const at::Tensor& ge /*[b] g·e*/, at::Tensor grad /*[b] out*/);
  static void val_rows(const at::Tensor& xwp /*[b,2k]*/, const at::Tensor& y /*[b,k] | [b]*/,
                       at::Tensor grad /*[b] out*/);
  // Pass 1's B with class indices: Bt[labels[i], :] += xa[i, :] in float64 (Bt = Bᵀ).
  static void scatter_rows(const at::Tensor& xa /*[b,d]*/, const at::Tensor& labels /*[b] int64 in [0, k)*/,
                           at::Tensor Bt /*[k,d] float64 in/out*/);
};

}  // namespace divaext::cpu
