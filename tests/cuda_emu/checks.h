// The checks of one case, each with the name the driver reports (plant.py matches on them):
//   launch          the launcher returned an error (e.g. an empty grid)
//   emulator        a warp rule was broken (emu_fibers.h: exited lanes, mismatched collectives)
//   input-modified  an input's bytes changed (compared with a copy taken before the launch)
//   out-of-bounds   a guard zone around an array changed
//   unwritten       an output element still holds the sentinel
//   cpu-mismatch    an output differs from the CPU formula's (tolerance below)
//   order-mismatch  the forward and reverse schedules gave different bits
#pragma once
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "arrays.h"

namespace emu_test {

struct Failure {
  std::string check, detail;
};

inline std::string fmt(double v) {
  char s[40];
  std::snprintf(s, sizeof s, "%.17g", v);
  return s;
}

// How far the emulated output may be from the CPU's. The formulas are the same code; what
// differs is the order of the double sums (lane-strided partial sums, then a butterfly,
// against a serial loop). Two orders of a sum of n terms differ by at most 2(n−1)·eps64·Σ|t|,
// and the cases bound the terms (|data| <= 5, λ <= 1, D >= 1/2, exp(f − max) <= 1), so
// Σ|t| <= 32·n·max(1, |x|) for an output x built from O(1) such sums: 128·n²·eps64 relative.
// Then rounding to T can land one ulp of T either side: 2 ulps. With exact inputs and no
// exp/log, every sum is exact in any order and the bits must agree (`bitwise`).
template <typename T>
bool close(double got, double want, bool f64, long n, bool bitwise) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (bitwise || std::isinf(want)) return got == want && std::signbit(got) == std::signbit(want);
  const double a = std::fabs(want);
  const double ulp = f64 ? std::nextafter(a, INFINITY) - a : double(std::nextafter(T(a), T(INFINITY)) - T(a));
  const double eps = std::numeric_limits<double>::epsilon();
  return std::fabs(got - want) <= 2 * ulp + 128.0 * double(n) * double(n) * eps * std::max(1.0, a);
}

// Everything about the emulated run `x` of a case that needs no reference: inputs unchanged
// (vs `base`, the arrays before any launch), guards intact, every output written.
template <typename T>
void check_launch(const Arrays<T>& base, const Arrays<T>& x, std::vector<Failure>& fails) {
  for (const auto& [name, b] : x.bufs) {
    const Buffer& before = base.bufs.at(name);
    if (!b.guards_intact()) fails.push_back({"out-of-bounds", "a guard zone of " + name + " was written"});
    for (long i = 0; i < b.n(); ++i) {
      if (b.spec.role == Role::in && !b.same_bits(i, before)) {
        fails.push_back({"input-modified", name + "[" + std::to_string(i) + "] changed"});
        break;
      }
      if (b.spec.role == Role::out && is_sentinel(b.data() + i * b.esize, b.esize)) {
        fails.push_back({"unwritten", name + "[" + std::to_string(i) + "] of " + std::to_string(b.n()) +
                                          " was not written"});
        break;
      }
    }
  }
}

// Outputs of `got` against `want`: bitwise for the schedule orders (`exact_bits`), else close().
template <typename T>
void compare_outputs(const Arrays<T>& got, const Arrays<T>& want, const std::string& check, bool exact_bits,
                     bool bitwise, long n, std::vector<Failure>& fails) {
  for (const auto& [name, g] : got.bufs) {
    if (g.spec.role != Role::out) continue;
    const Buffer& w = want.bufs.at(name);
    int shown = 0;
    for (long i = 0; i < g.n() && shown < 3; ++i) {
      if (is_sentinel(g.data() + i * g.esize, g.esize)) continue;  // reported as unwritten
      const bool ok = exact_bits ? g.same_bits(i, w) : close<T>(got.get(g, i), want.get(w, i), g.spec.f64, n, bitwise);
      if (!ok)
        ++shown, fails.push_back({check, name + "[" + std::to_string(i) + "] = " + fmt(got.get(g, i)) + ", expected " +
                                             fmt(want.get(w, i)) + (bitwise ? " (bitwise)" : "")});
    }
  }
}

}  // namespace emu_test
