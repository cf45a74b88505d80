// The table of launchers under test: for each, its arrays (names, shapes, how inputs are
// filled), the CUDA launcher called on them, and the CPU formula (row_math.h with the serial
// reducer, as cpu/row_kernels.cpp runs it) called per row with the same arguments. To test a
// new launcher, add one entry; the driver runs every entry over the same cases and checks.
// Each entry that reads targets is listed twice (target_launchers<T, Labels>): with dense rows
// y [b,k] (one-hot, soft in the special rows) and, as the *_labels launcher, with class
// indices y [b] (csrc/targets.h), the CPU formula reading the same targets through the
// matching accessor.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "arrays.h"
#include "cpu/serial_row.h"
#include "cuda/row_kernels.cuh"
#include "row_math.h"
#include "targets.h"

namespace emu_test {

template <typename T>
struct Launcher {
  std::string name;
  bool per_loss;           // run once per registered loss (the `kind` argument)
  const char* special;     // the input whose rows get the special patterns (inputs.h)
  const char* cpu_rows;    // the dimension the CPU formula runs over ("b", or "m" for loss_rows)
  std::vector<ArraySpec> arrays;
  std::function<cudaError_t(Arrays<T>&, int kind)> cuda;
  std::function<void(Arrays<T>&, long row, int kind)> cpu;
};

// The targets "y" of an entry: dense rows in T, or class indices (int64) for the _labels
// launcher; the pointer the launcher takes and the accessor the CPU formula takes.
template <typename T, bool Labels>
struct Targets {
  static std::string name(const char* base) { return Labels ? std::string(base) + "_labels" : base; }
  static ArraySpec spec() {
    return Labels ? ArraySpec{"y", "b", Role::in, Gen::index, false, true} : ArraySpec{"y", "b k", Role::in, Gen::label};
  }
  static auto ptr(Arrays<T>& x) {
    if constexpr (Labels) return static_cast<const long*>(x.i64("y"));
    else return static_cast<const T*>(x.t("y"));
  }
  static auto row(Arrays<T>& x, long i) {
    if constexpr (Labels) return divaext::rows::LabelRow{x.i64("y")[i]};
    else return divaext::rows::DenseRow<T>{x.t("y", i)};
  }
};

// launch_X<T> or launch_X_labels<T>, called with the same arguments (Y::ptr picks the type).
#define EMU_LAUNCHER(fn)                                                   \
  [](auto... args) {                                                       \
    if constexpr (Labels) return divaext::cuda::fn##_labels<T>(args...);   \
    else return divaext::cuda::fn<T>(args...);                             \
  }

template <typename T, bool Labels>
std::vector<Launcher<T>> target_launchers() {
  using divaext::cpu::SerialRow;
  namespace rows = divaext::rows;
  using A = Arrays<T>;
  using Y = Targets<T, Labels>;
  const Role out = Role::out;
  const cudaStream_t s0 = nullptr;
  return {
      {Y::name("loo_rows"), false, "yhat", "b",
       {{"z", "b d"}, {"yhat", "b k"}, Y::spec(), {"a", "b", Role::in, Gen::coef}, {"f", "b k", out}, {"h", "b", out}},
       [s0](A& x, int) {
         return EMU_LAUNCHER(launch_loo_rows)(x.t("z"), x.t("yhat"), Y::ptr(x), x.t("a"), x.t("f"), x.t("h"), x.s.b,
                                              x.s.d, x.s.k, s0);
       },
       [](A& x, long i, int) {
         rows::loo_row(SerialRow{}, x.t("z", i), x.t("yhat", i), Y::row(x, i), *x.t("a", i), x.t("f", i),
                       x.t("h", i), x.s.d, x.s.k);
       }},
      {Y::name("vjp_scalars"), false, "f", "b",
       {{"f", "b k"}, Y::spec(), {"h", "b", Role::in, Gen::h}, {"a", "b", Role::in, Gen::coef}, {"g", "b k"},
        {"c", "b", out}, {"u", "b k", out}, {"ge", "b", out}},
       [s0](A& x, int) {
         return EMU_LAUNCHER(launch_vjp_scalars)(x.t("f"), Y::ptr(x), x.t("a"), x.t("h"), x.t("g"), x.t("c"),
                                                 x.t("u"), x.t("ge"), x.s.b, x.s.k, s0);
       },
       [](A& x, long i, int) {
         rows::vjp_scalars_row(SerialRow{}, x.t("f", i), Y::row(x, i), *x.t("a", i), *x.t("h", i), x.t("g", i),
                               x.t("c", i), x.t("u", i), x.t("ge", i), x.s.k);
       }},
      {Y::name("loo_grad"), true, "yhat", "b",
       {{"z", "b d"}, {"yhat", "b k"}, Y::spec(), {"a", "b", Role::in, Gen::coef}, {"w", "b", Role::in, Gen::weight},
        {"f", "b k", out}, {"h", "b", out}, {"g", "b k", out}, {"loss", "b", out, Gen::data, true}, {"c", "b", out},
        {"u", "b k", out}, {"ge", "b", out}, {"resid", "b", out}},
       [s0](A& x, int kind) {
         return EMU_LAUNCHER(launch_loo_grad)(x.t("z"), x.t("yhat"), Y::ptr(x), x.t("a"), x.t("w"), kind, x.t("f"),
                                              x.t("h"), x.t("g"), x.f64("loss"), x.t("c"), x.t("u"), x.t("ge"),
                                              x.t("resid"), x.s.b, x.s.d, x.s.k, s0);
       },
       [](A& x, long i, int kind) {
         rows::loo_grad_row(SerialRow{}, x.t("z", i), x.t("yhat", i), Y::row(x, i), *x.t("a", i), *x.t("w", i),
                            kind, x.t("f", i), x.t("h", i), x.t("g", i), x.f64("loss", i), x.t("c", i), x.t("u", i),
                            x.t("ge", i), x.t("resid", i), x.s.d, x.s.k);
       }},
      {Y::name("vjp_rows"), false, "o", "b",
       {{"o", "b d+k"}, {"lam", "d", Role::in, Gen::lam, true}, {"f", "b k"}, Y::spec(), {"h", "b", Role::in, Gen::h},
        {"a", "b", Role::in, Gen::coef}, {"ge", "b"}, {"grad", "b", out}},
       [s0](A& x, int) {
         return EMU_LAUNCHER(launch_vjp_rows)(x.t("o"), x.f64("lam"), x.t("f"), Y::ptr(x), x.t("a"), x.t("h"),
                                              x.t("ge"), x.t("grad"), x.s.b, x.s.d, x.s.k, s0);
       },
       [](A& x, long i, int) {
         rows::vjp_row(SerialRow{}, x.t("o", i), x.f64("lam"), x.t("f", i), Y::row(x, i), *x.t("a", i), *x.t("h", i),
                       *x.t("ge", i), x.t("grad", i), x.s.d, x.s.k);
       }},
      {Y::name("vjp_fit"), false, "o", "b",
       {{"o", "b d+2k"}, {"lam", "d", Role::in, Gen::lam, true}, Y::spec(), {"h", "b", Role::in, Gen::h},
        {"a", "b", Role::in, Gen::coef}, {"ge", "b"}, {"grad", "b", out}},
       [s0](A& x, int) {
         return EMU_LAUNCHER(launch_vjp_fit)(x.t("o"), x.f64("lam"), Y::ptr(x), x.t("a"), x.t("h"), x.t("ge"),
                                             x.t("grad"), x.s.b, x.s.d, x.s.k, s0);
       },
       [](A& x, long i, int) {
         rows::vjp_fit_row(SerialRow{}, x.t("o", i), x.f64("lam"), Y::row(x, i), *x.t("a", i), *x.t("h", i),
                           *x.t("ge", i), x.t("grad", i), x.s.d, x.s.k);
       }},
      {Y::name("val_rows"), false, "xwp", "b",
       {{"xwp", "b 2k"}, Y::spec(), {"grad", "b", out}},
       [s0](A& x, int) { return EMU_LAUNCHER(launch_val_rows)(x.t("xwp"), Y::ptr(x), x.t("grad"), x.s.b, x.s.k, s0); },
       [](A& x, long i, int) { rows::val_row(SerialRow{}, x.t("xwp", i), Y::row(x, i), x.t("grad", i), x.s.k); }},
  };
}
#undef EMU_LAUNCHER

// Launchers with no _labels variant: dense targets only.
template <typename T>
std::vector<Launcher<T>> dense_only_launchers() {
  using divaext::cpu::SerialRow;
  namespace rows = divaext::rows;
  namespace cu = divaext::cuda;
  using A = Arrays<T>;
  using Y = Targets<T, false>;
  const Role out = Role::out;
  return {
      {"loss_grad", true, "f", "b",
       {{"f", "b k"}, Y::spec(), {"w", "b", Role::in, Gen::weight}, {"g", "b k", out},
        {"loss", "b", out, Gen::data, true}},
       [](A& x, int kind) {
         return cu::launch_loss_grad<T>(x.t("f"), x.t("y"), x.t("w"), kind, x.t("g"), x.f64("loss"), x.s.b, x.s.k,
                                        nullptr);
       },
       [](A& x, long i, int kind) {
         rows::loss_row(SerialRow{}, kind, x.t("f", i), Y::row(x, i), *x.t("w", i), x.t("g", i), x.f64("loss", i),
                        x.s.k);
       }},
      {"loss_rows", true, "f", "m",
       {{"f", "m k"}, Y::spec(), {"loss", "m", out, Gen::data, true}},
       [](A& x, int kind) {
         return cu::launch_loss_rows<T>(x.t("f"), x.t("y"), kind, x.f64("loss"), x.s.b, x.s.per, x.s.k, nullptr);
       },
       [](A& x, long i, int kind) {
         rows::loss_row(SerialRow{}, kind, x.t("f", i), Y::row(x, i / x.s.per), T(1), rows::Discard{},
                        x.f64("loss", i), x.s.k);
       }},
  };
}

template <typename T>
std::vector<Launcher<T>> launchers() {
  std::vector<Launcher<T>> all = dense_only_launchers<T>();
  for (auto& l : target_launchers<T, false>()) all.push_back(l);
  for (auto& l : target_launchers<T, true>()) all.push_back(l);
  return all;
}

}  // namespace emu_test
