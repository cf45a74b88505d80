// Input checks shared by every device's ops. Messages are for users: they name the argument,
// what was expected and what was given. The Python API checks the same things earlier (and
// more, e.g. label ranges); these guard direct torch.ops.divaext calls.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/nonzero.h>
#include <c10/util/Exception.h>

#include <string>

#include "losses.h"

namespace divaext {

// The dtype the passes compute in for features of x's dtype: half-precision features
// (float16, bfloat16) are read as they are and converted block by block to float32; every
// other per-row input and output of the ops is in this dtype.
inline at::ScalarType compute_type(const at::Tensor& x) {
  const auto t = x.scalar_type();
  return t == at::kHalf || t == at::kBFloat16 ? at::kFloat : t;
}

// x [n,d] features: float32/float64, or float16/bfloat16 (computed in float32).
inline void check_features(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 2, "divaext: features must be 2-D, got shape ", x.sizes());
  const auto t = x.scalar_type();
  TORCH_CHECK_TYPE(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
                   "divaext: features must be float32, float64, float16 or bfloat16, got ", t);
}

inline void check_float_matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 2, "divaext: ", name, " must be 2-D, got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "divaext: ", name, " must be float32 or float64, got ", t.scalar_type());
}

inline void check_like(const at::Tensor& t, const at::Tensor& x, const char* name,
                       at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, "divaext: ", name, " must have shape ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == compute_type(x), "divaext: ", name, " must have dtype ",
                   compute_type(x), " like the features, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), "divaext: ", name, " is on ", t.device(),
                    " but the features are on ", x.device());
}

inline void check_f64(const at::Tensor& t, const at::Tensor& x, const char* name,
                      at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, "divaext: ", name, " must have shape ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kDouble, "divaext: ", name, " must be float64");
  TORCH_CHECK_VALUE(t.device() == x.device(), "divaext: ", name, " is on ", t.device(),
                    " but the features are on ", x.device());
}

// The targets of n = x.size(0) rows: class indices [n] int64 in [0, k), or a matrix [n,k] in the
// compute dtype. k comes from the targets when they are a matrix, else from `k_else` (the
// columns of another operand, e.g. v [d,k]); returns k.
inline int64_t check_targets(const at::Tensor& y, const at::Tensor& x, int64_t k_else) {
  if (y.dim() == 1 && y.scalar_type() == at::kLong) {
    TORCH_CHECK_VALUE(y.size(0) == x.size(0), "divaext: class indices must have shape [", x.size(0), "], got ",
                      y.sizes());
    TORCH_CHECK_VALUE(y.device() == x.device(), "divaext: class indices are on ", y.device(),
                      " but the features are on ", x.device());
    TORCH_CHECK_VALUE(k_else >= 1, "divaext: class indices need k >= 1 classes, got k = ", k_else);
    const auto bad = (y < 0).logical_or_(y >= k_else);  // the kernels index rows of k by them
    if (bad.any().item<bool>()) {
      const int64_t i = bad.nonzero()[0][0].item<int64_t>();
      TORCH_CHECK_VALUE(false, "divaext: class index out of range: sample ", i, " has label ", y[i].item<int64_t>(),
                        ", expected 0 <= label < ", k_else);
    }
    return k_else;
  }
  TORCH_CHECK_VALUE(y.dim() == 2, "divaext: targets must be 2-D [n, k], got shape ", y.sizes(),
                    y.dim() == 1 ? " (1-D targets are class indices and must be int64)" : "");
  check_like(y, x, "targets", {x.size(0), y.size(1)});
  return y.size(1);
}

// `kind` is a code of the loss registry (losses.h) and the targets have the columns that loss
// reads (cross-entropy starts its running maximum at the row's first output).
inline void check_loss(int64_t kind, int64_t k) {
  TORCH_CHECK_VALUE(kind >= 0 && kind < losses::Losses::size, "divaext: unknown loss kind ", kind);
  const losses::Info loss = losses::Losses::info(int(kind));
  TORCH_CHECK_VALUE(k >= loss.min_columns, "divaext: loss kind ", kind, " (", loss.what, ") needs at least ",
                    loss.min_columns == 1 ? "one class column" : std::to_string(loss.min_columns) + " class columns",
                    ", got targets with k = ", k);
}

}  // namespace divaext
