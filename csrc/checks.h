// Input checks shared by every device's ops. Messages are for users: they name the argument,
// what was expected and what was given. The Python API checks the same things earlier (and
// more, e.g. label ranges); these guard direct torch.ops.divaext calls.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

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

// Cross-entropy reads the row's first output to start its running maximum: it needs k ≥ 1.
inline void check_loss(int64_t kind, int64_t k) {
  TORCH_CHECK_VALUE(kind >= 0 && kind <= 2, "divaext: unknown loss kind ", kind);
  TORCH_CHECK_VALUE(kind == 0 || k >= 1, "divaext: loss kind ", kind,
                    " (cross-entropy) needs at least one class column, got targets with k = ", k);
}

}  // namespace divaext
