// The argmax rule checked against its specification, written here independently of
// rows::ArgMax (row_reducer.h): torch.argmax's, NaN is the maximum (the first NaN wins),
// otherwise the first index of the largest value. Both reducers are checked: the CPU's
// SerialRow and CUDA's WarpRow (through a probe kernel, one warp per row like the real ones),
// on rows with ties across lanes, ±0, ±inf, NaN, all −inf and all NaN. A rule shared by both
// devices can be wrong on both at once, which comparing the devices would not see.
#pragma once
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/serial_row.h"

namespace emu_test {

template <typename T>
long spec_argmax(const T* p, long n) {
  for (long c = 0; c < n; ++c)
    if (std::isnan(p[c])) return c;
  long best = 0;
  for (long c = 1; c < n; ++c)
    if (p[c] > p[best]) best = c;
  return best;
}

// The probe kernel's launcher (argmax_kernel.h, compiled with the device code).
template <typename T>
void launch_argmax_probe(const T* p, long rows, long n, long* index);

// The probe rows of length n: each pattern once, then a few random rows with repeated maxima.
template <typename T>
std::vector<T> probe_rows(long n, long& rows) {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const long p = n >= 35 ? 5 : 0, q = n - 1;
  std::vector<std::vector<T>> v;
  auto row = [&](T fill) { return v.emplace_back(size_t(n), fill), &v.back(); };
  auto* r = row(0);
  (*r)[p] = (*r)[q] = 2;  // a tie across lanes: index p, whatever lane holds q
  row(T(0.75));  // constant: index 0
  r = row(-inf);  // all −inf: index 0
  r = row(nan);  // all NaN: index 0
  r = row(-1), (*r)[q] = nan;  // NaN is the maximum
  r = row(1), (*r)[q] = nan, (*r)[p] = inf;  // NaN beats +inf
  r = row(-inf), (*r)[q] = -0.0, (*r)[p] = 0.0;  // +0 == −0: the first wins
  r = row(-inf), (*r)[q] = T(-1e30);
  r = row(1), (*r)[q] = inf, (*r)[p] = -inf;
  for (int s = 0; s < 4; ++s) {  // maxima repeated every 7 (or 40) places, from a shifted start
    r = row(0);
    for (long c = (s * 3) % n; c < n; c += s % 2 ? 7 : 40) (*r)[c] = 3;
  }
  rows = long(v.size());
  std::vector<T> flat;
  for (auto& x : v) flat.insert(flat.end(), x.begin(), x.end());
  return flat;
}

template <typename T>
std::vector<std::string> check_argmax(long n) {
  long rows = 0;
  const std::vector<T> p = probe_rows<T>(n, rows);
  std::vector<long> index(size_t(rows), -2);
  emu::errors.clear();
  launch_argmax_probe(p.data(), rows, n, index.data());
  std::vector<std::string> bad = emu::errors;
  if (cudaGetLastError() != cudaSuccess) bad.push_back("the probe launch failed");
  for (long i = 0; i < rows; ++i) {
    const long want = spec_argmax(p.data() + i * n, n);
    const long cpu = divaext::cpu::SerialRow{}.argmax(p.data() + i * n, n).index;
    if (index[i] != want || cpu != want)
      bad.push_back("n=" + std::to_string(n) + " probe row " + std::to_string(i) + ": expected index " +
                    std::to_string(want) + ", CUDA " + std::to_string(index[i]) + ", CPU " + std::to_string(cpu));
  }
  return bad;
}

}  // namespace emu_test
