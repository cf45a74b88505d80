// How the per-row formulas (row_math.h, losses.h) read a row's targets: through an accessor
// `y(c)` (the target of output c) and `y.argmax(r, k)` (the index of its first maximum), so
// the same formula serves both kinds of targets the ops take:
//   DenseRow   a float row y[0, k) of an [n,k] target matrix (one-hot rows, soft or regression
//              targets);
//   LabelRow   a class index: y(c) = (c == label), argmax = label. It equals the DenseRow of
//              the one-hot row exactly (its sums add exact zeros), with no n×k matrix anywhere.
// A block's targets (DenseTargets, LabelTargets) hand out row i's accessor with row(i).
// Torch-free and host/device inline.
#pragma once
#include "row_reducer.h"

namespace divaext::rows {

template <typename T>
struct DenseRow {
  const T* p;
  DIVAEXT_HD double operator()(long c) const { return double(p[c]); }
  template <class R>
  DIVAEXT_HD long argmax(const R& r, long k) const { return r.argmax(p, k).index; }
};

struct LabelRow {
  long label;
  DIVAEXT_HD double operator()(long c) const { return c == label ? 1.0 : 0.0; }
  template <class R>
  DIVAEXT_HD long argmax(const R&, long) const { return label; }
};

template <typename T>
struct DenseTargets {
  const T* y;  // [b,k] row-major
  long k;
  DIVAEXT_HD DenseRow<T> row(long i) const { return {y + i * k}; }
};

struct LabelTargets {
  const long* labels;  // [b] class indices in [0, k)
  DIVAEXT_HD LabelRow row(long i) const { return {labels[i]}; }
};

}  // namespace divaext::rows
