// The loss registry: every per-sample loss the ops accept, each defined once (name, row
// formula) and numbered by its place in `Losses`. The CPU and CUDA kernels run the same
// `row` (through loss_row in row_math.h); checks.h reads the Info; module.cpp exports the
// names and codes to Python as divaext._C.losses (so _validate.LOSSES).
// Formulas: docs/math.md. Torch-free and host/device inline.
//
// A loss is a struct with
//   info                   its Info (name, words for messages, fewest outputs);
//   row(r, f, y, w, g, k)  with r a row reducer (row_reducer.h), f [k] predictions, y the
//                          row's targets as an accessor (targets.h: y(c), y.argmax(r, k)), w
//                          the row's loss weight: writes g[c] = w ∂loss/∂f_c (g may be a
//                          Discard) and returns w·loss of the row, in every worker.
#pragma once
#include <cmath>
#include <type_traits>

#include "row_reducer.h"
#include "targets.h"

namespace divaext::losses {

using rows::Sums;

struct Info {
  const char* name;  // the Python name (loss="…" of the public API)
  const char* what;  // a few words for error messages
  long min_columns;  // the fewest outputs k a row may have
};

struct Mse {
  static constexpr Info info{"mse", "squared error", 0};

  // Σ_c (f_c − y_c)².
  template <class R, typename T, class Y, class G>
  static DIVAEXT_HD double row(const R& r, const T* f, const Y& y, T w, G g, long k) {
    return double(w) * r.sum(k, [&](long c) {
      const double diff = double(f[c]) - y(c);
      g[c] = T(2.0 * double(w) * diff);
      return diff * diff;
    });
  }
};

struct Ce {
  static constexpr Info info{"ce", "cross-entropy", 1};  // 1: max f starts at f[0]

  // f as logits, y as (possibly soft) target mass: (Σy) lse(f) − y·f.
  template <class R, typename T, class Y, class G>
  static DIVAEXT_HD double row(const R& r, const T* f, const Y& y, T w, G g, long k) {
    return given_max(r, f, y, w, g, k, r.argmax(f, k).value);
  }

  // The same with max f already known (CeMisclassified finds it with the argmax it needs).
  template <class R, typename T, class Y, class G>
  static DIVAEXT_HD double given_max(const R& r, const T* f, const Y& y, T w, G g, long k, double mf) {
    const Sums<3> s = r.sum(k, [&](long c) {
      return Sums<3>{{y(c), y(c) * double(f[c]), exp(double(f[c]) - mf)}};
    });
    const double sy = s[0], lse = mf + log(s[2]);
    r.each(k, [&](long c) { g[c] = T(double(w) * (sy * exp(double(f[c]) - lse) - y(c))); });
    return double(w) * (sy * lse - s[1]);
  }
};

struct CeMisclassified {
  static constexpr Info info{"ce_misclassified", "cross-entropy on misclassified samples", 1};

  // Cross-entropy counted only where argmax f != argmax y; the mask is held constant.
  template <class R, typename T, class Y, class G>
  static DIVAEXT_HD double row(const R& r, const T* f, const Y& y, T w, G g, long k) {
    const rows::ArgMax mf = r.argmax(f, k);
    if (mf.index != y.argmax(r, k)) return Ce::given_max(r, f, y, w, g, k, mf.value);
    r.each(k, [&](long c) { g[c] = T(0); });
    return 0.0;
  }
};

// The losses in code order: a loss's code is its place here (codes are stored nowhere else).
template <class... L>
struct Registry {
  static constexpr int size = sizeof...(L);

  // f(L{}) for the loss L with code `kind` (kind must be valid: checks.h tests it first).
  template <class F>
  static DIVAEXT_HD auto visit(int kind, F&& f) {
    std::common_type_t<decltype(f(L{}))...> out{};
    int code = 0;
    (void)((kind == code++ ? (out = f(L{}), true) : false) || ...);
    return out;
  }

  // The Info of the loss with code `kind` (valid).
  static Info info(int kind) {
    return visit(kind, [](auto loss) { return decltype(loss)::info; });
  }
};

using Losses = Registry<Mse, Ce, CeMisclassified>;

}  // namespace divaext::losses
