// Every divaext op schema, in one place. Kernels are registered per device where they are
// written (cpu/register.cpp, cuda/register.cpp); fake (meta) kernels in python/divaext/engine/ops.py.
//
// The dataset derivative is a few streaming passes over row blocks of X (see
// docs/math.md and csrc/README.md). Each pass is one op, so the same ops serve a
// single tensor, a sharded tensor (all-reduce the d×d / d×k sums between passes) and a stream
// of blocks read from disk (sum the d×d / d×k results over blocks).
//
// Shapes: x [n,d] float32|float64, or float16|bfloat16 read as they are and converted block by
// block to float32 (any strides). T = the compute dtype: x's, float32 for half-precision x.
// y: targets, either [n,k] in T or class indices [n] int64 in [0, k) (read as one-hot rows
// without forming them; k is then the columns of v, w or the basis); a [n] weights in T.
// Matrices that are solved or factorised (M, B, t, v, C, XtU, r, p, w) are float64.
#include <torch/library.h>

TORCH_LIBRARY(divaext, m) {
  // Pass 1. M = Xᵀ diag(a) X (no ridge term), B = Xᵀ diag(a) Y; both float64, [d,d] and [d,k].
  // y [n,k] only: class indices go to gram_labels (k is not implied by them).
  m.def("gram(Tensor x, Tensor a, Tensor y, int block_rows=0) -> (Tensor, Tensor)");
  // Pass 1 with class indices labels [n] int64 in [0, num_classes): M as in gram, and
  // B = Xᵀ diag(a) onehot(labels) by a scatter of the weighted rows (n·d work, not n·d·k).
  m.def("gram_labels(Tensor x, Tensor a, Tensor labels, int num_classes, int block_rows=0) -> (Tensor, Tensor)");
  // Pass 2. With t = L⁻ᵀ (upper triangular, L Lᵀ = M + lam I) and v = tᵀ B: whitened rows
  // z = x t, leverage h = |z|², fit ŷ = z v, LOO prediction f = (ŷ − a h y) / (1 − a h).
  // Raises if 1 − a h <= min_denominator for some row. Returns f [n,k], h [n] in x's dtype.
  m.def("loo_rows(Tensor x, Tensor y, Tensor a, Tensor t, Tensor v, float min_denominator, "
        "int block_rows=0) -> (Tensor, Tensor)");
  // Per-row loss of predictions f against targets y, weighted by w [n]: returns the weighted
  // loss sum (float64, 0-d) and g = ∂(sum)/∂f [n,k]. kind: a loss code of csrc/losses.h
  // (divaext._C.losses maps the names to them).
  m.def("loss_grad(Tensor f, Tensor y, Tensor w, int kind) -> (Tensor, Tensor)");
  // Unweighted per-row losses of G predictions per target row (e.g. one per candidate λ of a
  // grid): f [n,G,k], y [n,k], kind as in loss_grad → [n,G] float64, out[i,j] = ℓ(f[i,j], y[i]).
  m.def("loss_rows(Tensor f, Tensor y, int kind) -> Tensor");
  // Passes 2 + A fused for a loss known up front (w [n] loss weights, kind as in loss_grad):
  // h [n], ge [n] = g·e with g = w ∂ℓ/∂f (unnormalised), Σ w ℓ (float64 0-d), and the whitened
  // backward sums C̃ = Zᵀ diag(c) Z [d,d], P̃ = Zᵀ U [d,k] (float64), c = a (g·e)/D, U = g/D,
  // e = y − f. f and g never leave the block: pass B (vjp_fit) needs only h and g·e. Last,
  // max_i |y_i − ŷ_i| (float64 0-d; NaN if one is NaN, 0 for n = 0): the largest fit residual,
  // which the gradient's accuracy estimate needs (python/divaext/engine/accuracy.py).
  m.def("loo_grad(Tensor x, Tensor y, Tensor a, Tensor w, Tensor t, Tensor v, int kind, "
        "float min_denominator, int block_rows=0) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Backward pass A alone, for any upstream g = ∂L/∂f [n,k]: C̃, P̃ and ge [n] as in loo_grad.
  m.def("vjp_gram(Tensor x, Tensor y, Tensor a, Tensor f, Tensor h, Tensor g, Tensor t, "
        "int block_rows=0) -> (Tensor, Tensor, Tensor)");
  // Backward pass B. With C̃ = E Λ Eᵀ, basis = [t E | t P̃] [d,d+k], eigenvalues = Λ [d] and
  // ge = g·e [n]: ∂L/∂a_j = D_j (P̃ᵀz_j)·e_j + Σ_m λ_m (Eᵀz_j)_m² − h_j ge_j − c_j h_j². Returns [n].
  m.def("vjp_rows(Tensor x, Tensor y, Tensor a, Tensor f, Tensor h, Tensor ge, Tensor basis, "
        "Tensor eigenvalues, int block_rows=0) -> Tensor");
  // Backward pass B after loo_grad, without f: basis = [t E | t P̃ | t v] [d,d+2k] also gives the
  // fit ŷ = x t v, and D e = y − ŷ: ∂L/∂a_j = (P̃ᵀz_j)·(y_j − ŷ_j) + Σ_m λ_m (Eᵀz_j)_m² − h_j ge_j
  // − c_j h_j². Returns [n].
  m.def("vjp_fit(Tensor x, Tensor y, Tensor a, Tensor h, Tensor ge, Tensor basis, Tensor eigenvalues, "
        "int block_rows=0) -> Tensor");
  // Validation derivative (paper Prop. 2): with w = S B (ridge weights) and p = S X_vᵀ G_v,
  // ∂L_val/∂a_j = (x_jᵀ p)·(y_j − x_jᵀ w). Returns [n].
  m.def("val_rows(Tensor x, Tensor y, Tensor w, Tensor p, int block_rows=0) -> Tensor");
}
