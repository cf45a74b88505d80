// Input checks shared by every device's ops. Messages are for users: they name the argument,
// what was expected and what was given. The Python API checks the same things earlier (and
// more, e.g. label ranges); these guard direct torch.ops.divaext calls.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#include "losses.h"

namespace divaext {

inline void check_float_matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 2, "divaext: ", name, " must be 2-D, got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "divaext: ", name, " must be float32 or float64, got ", t.scalar_type());
}

inline void check_like(const at::Tensor& t, const at::Tensor& x, const char* name,
                       at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, "divaext: ", name, " must have shape ", shape, ", got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "divaext: ", name, " must have dtype ",
                   x.scalar_type(), " like the features, got ", t.scalar_type());
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
