// The CPU's row reducer (row_reducer.h): one thread walks the whole row, so every loop is a
// plain serial loop in index order, and a row needs no synchronisation.
#pragma once
#include "row_reducer.h"

namespace divaext::cpu {

struct SerialRow {
  template <class F>
  void each(long n, F&& body) const {
    for (long j = 0; j < n; ++j) body(j);
  }
  template <class F>
  auto sum(long n, F&& term) const {
    decltype(term(0L)) s{};
    for (long j = 0; j < n; ++j) s += term(j);
    return s;
  }
  template <class F>
  double amax(long n, F&& term) const {
    double m = 0.0;
    for (long j = 0; j < n; ++j) m = rows::max_nan(m, rows::magnitude(term(j)));
    return m;
  }
  // The order of ArgMax::take (row_reducer.h), shared with the CUDA lanes.
  template <typename T>
  rows::ArgMax argmax(const T* p, long n) const {
    rows::ArgMax m = rows::ArgMax::none();
    for (long c = 0; c < n; ++c) m.take(double(p[c]), c);
    return m;
  }
  template <typename T, typename V>
  void put(T* p, V v) const { *p = v; }
  void sync() const {}
};

}  // namespace divaext::cpu
