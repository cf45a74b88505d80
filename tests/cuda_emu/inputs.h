// The inputs of a case, in one of two modes:
//   exact  every value a small dyadic, chosen so that every sum and product the formulas form
//          is exact in double: |z|² is a power of two and a·h ∈ {0, 1/2}, so D ∈ {1, 1/2}
//          and f = (ŷ − a h y)/D are dyadic too. Sums of such terms give the same bits in any
//          order, so the emulated kernels must match the CPU bitwise wherever no exp/log
//          enters (driver.cpp: kDyadicLosses).
//   gauss  N(0, 1) clipped to ±4 (a, h, w, λ uniform): results depend on the summation order.
// Every 4th row of the launcher's `special` input gets one of the patterns below: ties across
// lanes (the first index must win, not the first lane), constant rows, ±inf, NaN, all −inf,
// all NaN, and ties in the targets. Class indices (Gen::index) are uniform in [0, k) but for
// rows 0 and 1 (0 and k − 1); in a special row, the label sits on a special place (the first
// of the tied maxima, ±inf, NaN) or on the last class.
#pragma once
#include <cmath>
#include <limits>
#include <random>

#include "arrays.h"

namespace emu_test {

enum class Mode { exact, gauss };

struct Rng {
  std::mt19937_64 g;
  long ints(long lo, long hi) { return std::uniform_int_distribution<long>(lo, hi)(g); }
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(g); }
  double normal() { return std::max(-4.0, std::min(4.0, std::normal_distribution<double>()(g))); }
};

template <typename T>
void fill_row(Arrays<T>& x, Buffer& b, long i, Mode mode, Rng& r) {
  const long L = b.row_len, o = i * L;
  const bool exact = mode == Mode::exact;
  for (long j = 0; j < L; ++j) {
    double v = 0;
    switch (b.spec.gen) {
      case Gen::data: v = exact ? r.ints(-8, 8) / 4.0 : r.normal(); break;
      case Gen::label: v = 0; break;
      case Gen::weight: v = exact ? r.ints(1, 8) / 4.0 : r.uniform(0.1, 2); break;
      case Gen::h: v = exact ? std::ldexp(1.0, int(r.ints(-2, 1))) : r.uniform(0, 2); break;
      case Gen::lam: v = exact ? r.ints(0, 8) / 4.0 : r.uniform(0, 1); break;
      case Gen::coef: break;  // set by fill_coef, once the rows' h are known
      case Gen::index: v = i == 0 ? 0 : i == 1 ? x.s.k - 1 : r.ints(0, x.s.k - 1); break;
    }
    x.set(b, o + j, v);
  }
  if (b.spec.gen == Gen::label && L > 0) x.set(b, o + r.ints(0, L - 1), 1.0);
  if (exact && b.spec.name == std::string("z")) {  // |z|² = c, a power of two: ±1 at c spread places
    long c = 1;
    while (2 * c <= L) c *= 2;
    for (long j = 0; j < L; ++j) x.set(b, o + j, 0.0);
    for (long j = 0; j < c; ++j) x.set(b, o + j * L / c, r.ints(0, 1) ? 1.0 : -1.0);
  }
}

// a = s / h with s ∈ {0, 1/2} (exact) or uniform in [0, 1/2), h the row's |z|² or its h input.
template <typename T>
void fill_coef(Arrays<T>& x, Buffer& a, Mode mode, Rng& r) {
  for (long i = 0; i < a.rows; ++i) {
    double h = 0;
    if (x.has("z")) {
      Buffer& z = x.buf("z");
      for (long j = 0; j < z.row_len; ++j) h += x.get(z, i * z.row_len + j) * x.get(z, i * z.row_len + j);
    } else {
      h = x.get(x.buf("h"), i);
    }
    const double s = mode == Mode::exact ? 0.5 * double(r.ints(0, 1)) : r.uniform(0, 0.5);
    x.set(a, i, h > 0 && std::isfinite(h) ? s / h : 0.25);
  }
}

template <typename T>
void special_row(Arrays<T>& x, Buffer& b, long i) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const long L = b.row_len, o = i * L, p = L >= 35 ? 5 : 0, q = L - 1;  // p, q in different lanes
  Buffer* y = x.has("y") && x.buf("y").row_len == L ? &x.buf("y") : nullptr;
  const long yo = y ? i * y->rows / b.rows * L : 0;  // the target row of prediction row i
  Buffer* lab = x.has("y") && x.buf("y").spec.i64 && L == x.s.k ? &x.buf("y") : nullptr;
  if (lab) x.set(*lab, i * lab->rows / b.rows, i / 4 % 8 == 0 || i / 4 % 8 == 3 ? p : q);
  auto fill = [&](double v) { for (long j = 0; j < L; ++j) x.set(b, o + j, v); };
  switch (i / 4 % 8) {
    case 0:  // a tie across lanes, above every data value; the target at the first tied index
      x.set(b, o + p, 5.0), x.set(b, o + q, 5.0);
      if (y) {
        for (long j = 0; j < L; ++j) x.set(*y, yo + j, 0.0);
        x.set(*y, yo + p, 1.0);
      }
      break;
    case 1: fill(0.75); break;
    case 2: x.set(b, o + q, inf); break;
    case 3: x.set(b, o + p, -inf); break;
    case 4: x.set(b, o + q, nan); break;
    case 5: fill(-inf); break;
    case 6: fill(nan); break;
    case 7:  // a tie in the targets (soft labels), or NaN before +inf
      if (y) {
        for (long j = 0; j < L; ++j) x.set(*y, yo + j, 0.0);
        x.set(*y, yo + p, 0.5), x.set(*y, yo + q, 0.5);
      } else {
        x.set(b, o + p, nan), x.set(b, o + q, inf);
      }
      break;
  }
}

template <typename T>
void fill_inputs(Arrays<T>& x, Mode mode, const std::string& special, unsigned long seed) {
  Rng r{std::mt19937_64(seed)};
  for (const std::string& name : x.order) {
    Buffer& b = x.buf(name);
    if (b.spec.role == Role::in)
      for (long i = 0; i < b.rows; ++i) fill_row(x, b, i, mode, r);
  }
  Buffer& sp = x.buf(special);
  for (long i = 3; i < sp.rows; i += 4) special_row(x, sp, i);
  for (const std::string& name : x.order)
    if (x.buf(name).spec.role == Role::in && x.buf(name).spec.gen == Gen::coef) fill_coef(x, x.buf(name), mode, r);
}

}  // namespace emu_test
