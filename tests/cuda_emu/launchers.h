// The table of launchers under test: for each, its arrays (names, shapes, how inputs are
// filled), the CUDA launcher called on them, and the CPU formula (row_math.h with the serial
// reducer, as cpu/row_kernels.cpp runs it) called per row with the same arguments. To test a
// new launcher, add one entry; the driver runs every entry over the same cases and checks.
#pragma once
#include <functional>
#include <vector>

#include "arrays.h"
#include "cpu/serial_row.h"
#include "cuda/row_kernels.cuh"
#include "row_math.h"

namespace emu_test {

template <typename T>
struct Launcher {
  const char* name;
  bool per_loss;           // run once per registered loss (the `kind` argument)
  const char* special;     // the input whose rows get the special patterns (inputs.h)
  const char* cpu_rows;    // the dimension the CPU formula runs over ("b", or "m" for loss_rows)
  std::vector<ArraySpec> arrays;
  std::function<cudaError_t(Arrays<T>&, int kind)> cuda;
  std::function<void(Arrays<T>&, long row, int kind)> cpu;
};

template <typename T>
std::vector<Launcher<T>> launchers() {
  using divaext::cpu::SerialRow;
  namespace rows = divaext::rows;
  namespace cu = divaext::cuda;
  using A = Arrays<T>;
  const Role out = Role::out;
  return {
      {"loo_rows", false, "yhat", "b",
       {{"z", "b d"}, {"yhat", "b k"}, {"y", "b k", Role::in, Gen::label}, {"a", "b", Role::in, Gen::coef},
        {"f", "b k", out}, {"h", "b", out}},
       [](A& x, int) {
         return cu::launch_loo_rows<T>(x.t("z"), x.t("yhat"), x.t("y"), x.t("a"), x.t("f"), x.t("h"), x.s.b, x.s.d,
                                       x.s.k, nullptr);
       },
       [](A& x, long i, int) {
         rows::loo_row(SerialRow{}, x.t("z", i), x.t("yhat", i), x.t("y", i), *x.t("a", i), x.t("f", i), x.t("h", i),
                       x.s.d, x.s.k);
       }},
      {"loss_grad", true, "f", "b",
       {{"f", "b k"}, {"y", "b k", Role::in, Gen::label}, {"w", "b", Role::in, Gen::weight}, {"g", "b k", out},
        {"loss", "b", out, Gen::data, true}},
       [](A& x, int kind) {
         return cu::launch_loss_grad<T>(x.t("f"), x.t("y"), x.t("w"), kind, x.t("g"), x.f64("loss"), x.s.b, x.s.k,
                                        nullptr);
       },
       [](A& x, long i, int kind) {
         rows::loss_row(SerialRow{}, kind, x.t("f", i), x.t("y", i), *x.t("w", i), x.t("g", i), x.f64("loss", i),
                        x.s.k);
       }},
      {"loss_rows", true, "f", "m",
       {{"f", "m k"}, {"y", "b k", Role::in, Gen::label}, {"loss", "m", out, Gen::data, true}},
       [](A& x, int kind) {
         return cu::launch_loss_rows<T>(x.t("f"), x.t("y"), kind, x.f64("loss"), x.s.b, x.s.per, x.s.k, nullptr);
       },
       [](A& x, long i, int kind) {
         rows::loss_row(SerialRow{}, kind, x.t("f", i), x.t("y", i / x.s.per), T(1), rows::Discard{},
                        x.f64("loss", i), x.s.k);
       }},
      {"vjp_scalars", false, "f", "b",
       {{"f", "b k"}, {"y", "b k", Role::in, Gen::label}, {"h", "b", Role::in, Gen::h},
        {"a", "b", Role::in, Gen::coef}, {"g", "b k"}, {"c", "b", out}, {"u", "b k", out}, {"ge", "b", out}},
       [](A& x, int) {
         return cu::launch_vjp_scalars<T>(x.t("f"), x.t("y"), x.t("a"), x.t("h"), x.t("g"), x.t("c"), x.t("u"),
                                          x.t("ge"), x.s.b, x.s.k, nullptr);
       },
       [](A& x, long i, int) {
         rows::vjp_scalars_row(SerialRow{}, x.t("f", i), x.t("y", i), *x.t("a", i), *x.t("h", i), x.t("g", i),
                               x.t("c", i), x.t("u", i), x.t("ge", i), x.s.k);
       }},
      {"loo_grad", true, "yhat", "b",
       {{"z", "b d"}, {"yhat", "b k"}, {"y", "b k", Role::in, Gen::label}, {"a", "b", Role::in, Gen::coef},
        {"w", "b", Role::in, Gen::weight}, {"f", "b k", out}, {"h", "b", out}, {"g", "b k", out},
        {"loss", "b", out, Gen::data, true}, {"c", "b", out}, {"u", "b k", out}, {"ge", "b", out}},
       [](A& x, int kind) {
         return cu::launch_loo_grad<T>(x.t("z"), x.t("yhat"), x.t("y"), x.t("a"), x.t("w"), kind, x.t("f"), x.t("h"),
                                       x.t("g"), x.f64("loss"), x.t("c"), x.t("u"), x.t("ge"), x.s.b, x.s.d, x.s.k,
                                       nullptr);
       },
       [](A& x, long i, int kind) {
         rows::loo_grad_row(SerialRow{}, x.t("z", i), x.t("yhat", i), x.t("y", i), *x.t("a", i), *x.t("w", i), kind,
                            x.t("f", i), x.t("h", i), x.t("g", i), x.f64("loss", i), x.t("c", i), x.t("u", i),
                            x.t("ge", i), x.s.d, x.s.k);
       }},
      {"vjp_rows", false, "o", "b",
       {{"o", "b d+k"}, {"lam", "d", Role::in, Gen::lam, true}, {"f", "b k"}, {"y", "b k", Role::in, Gen::label},
        {"h", "b", Role::in, Gen::h}, {"a", "b", Role::in, Gen::coef}, {"ge", "b"}, {"grad", "b", out}},
       [](A& x, int) {
         return cu::launch_vjp_rows<T>(x.t("o"), x.f64("lam"), x.t("f"), x.t("y"), x.t("a"), x.t("h"), x.t("ge"),
                                       x.t("grad"), x.s.b, x.s.d, x.s.k, nullptr);
       },
       [](A& x, long i, int) {
         rows::vjp_row(SerialRow{}, x.t("o", i), x.f64("lam"), x.t("f", i), x.t("y", i), *x.t("a", i), *x.t("h", i),
                       *x.t("ge", i), x.t("grad", i), x.s.d, x.s.k);
       }},
      {"val_rows", false, "xwp", "b",
       {{"xwp", "b 2k"}, {"y", "b k"}, {"grad", "b", out}},
       [](A& x, int) { return cu::launch_val_rows<T>(x.t("xwp"), x.t("y"), x.t("grad"), x.s.b, x.s.k, nullptr); },
       [](A& x, long i, int) { rows::val_row(SerialRow{}, x.t("xwp", i), x.t("y", i), x.t("grad", i), x.s.k); }},
  };
}

}  // namespace emu_test
