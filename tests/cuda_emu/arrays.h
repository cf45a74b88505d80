// The named arrays of one launch, as plain host memory: each array sits between two guard
// zones (an out-of-bounds write changes them), outputs start filled with a signalling-NaN
// sentinel (an element no thread wrote keeps its exact bit pattern; no arithmetic produces
// it), and inputs are filled from a seeded generator (inputs.h).
#pragma once
#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace emu_test {

// b rows; loss_rows scores m = b·per prediction rows against b target rows (per = 1 elsewhere).
struct Shape {
  long b, d, k, per;
};

inline long extent(const std::string& dim, const Shape& s) {
  if (dim == "b") return s.b;
  if (dim == "m") return s.b * s.per;
  if (dim == "d") return s.d;
  if (dim == "k") return s.k;
  if (dim == "d+k") return s.d + s.k;
  if (dim == "2k") return 2 * s.k;
  if (dim == "d+2k") return s.d + 2 * s.k;
  throw std::runtime_error("unknown dimension " + dim);
}

enum class Role { in, out };
// How an input is filled (inputs.h): data values, one-hot labels, loss weights, the LOO
// coefficient a (scaled to the row's h so that D = 1 − a h >= 1/2), h itself, eigenvalues,
// class indices in [0, k) (an int64 array: `i64`).
enum class Gen { data, label, weight, coef, h, lam, index };

struct ArraySpec {
  const char* name;
  const char* shape;  // "rows [row length]": e.g. "b k", "b d+k", "b" (a scalar per row), "d"
  Role role = Role::in;
  Gen gen = Gen::data;
  bool f64 = false;  // float64 whatever the kernel's T (the loss, the eigenvalues)
  bool i64 = false;  // int64 (class indices)
};

struct Buffer {
  ArraySpec spec;
  long rows = 0, row_len = 1, guard = 0;
  size_t esize = 0;
  std::vector<unsigned char> mem;  // guard | rows·row_len elements | guard

  static constexpr unsigned char kGuardByte = 0xA5;
  long n() const { return rows * row_len; }
  unsigned char* data() { return mem.data() + guard * esize; }
  const unsigned char* data() const { return mem.data() + guard * esize; }
  bool guards_intact() const {
    const size_t g = guard * esize, tail = g + n() * esize;
    for (size_t i = 0; i < g; ++i)
      if (mem[i] != kGuardByte || mem[tail + i] != kGuardByte) return false;
    return true;
  }
  // The element written as bits (for the bitwise comparisons and the sentinel).
  bool same_bits(long i, const Buffer& o) const { return !std::memcmp(data() + i * esize, o.data() + i * esize, esize); }
};

// The unwritten-output sentinel: a signalling NaN with a payload (quiet NaNs from arithmetic
// have the quiet bit set, so they never equal it).
inline void put_sentinel(unsigned char* p, size_t esize) {
  const unsigned long long d = 0x7FF4DEADBEEFCAFEull;
  const unsigned f = 0x7FA0BEEFu;
  esize == 8 ? std::memcpy(p, &d, 8) : std::memcpy(p, &f, 4);
}
inline bool is_sentinel(const unsigned char* p, size_t esize) {
  unsigned char s[8];
  put_sentinel(s, esize);
  return !std::memcmp(p, s, esize);
}

template <typename T>
struct Arrays {
  Shape s;
  std::map<std::string, Buffer> bufs;
  std::vector<std::string> order;  // the specs' order (inputs are generated in it)

  Arrays(const std::vector<ArraySpec>& specs, Shape shape) : s(shape) {
    for (const ArraySpec& a : specs) {
      Buffer b;
      b.spec = a;
      std::istringstream dims(a.shape);
      std::string dim;
      dims >> dim;
      b.rows = extent(dim, s);
      if (dims >> dim) b.row_len = extent(dim, s);
      b.esize = a.i64 ? sizeof(long) : a.f64 ? sizeof(double) : sizeof(T);
      b.guard = std::max(64L, b.row_len);  // a whole extra row lands in it
      b.mem.assign((b.n() + 2 * b.guard) * b.esize, Buffer::kGuardByte);
      if (a.role == Role::out)
        for (long i = 0; i < b.n(); ++i) put_sentinel(b.data() + i * b.esize, b.esize);
      bufs.emplace(a.name, b);
      order.push_back(a.name);
    }
  }
  Buffer& buf(const std::string& name) {
    auto it = bufs.find(name);
    if (it == bufs.end()) throw std::runtime_error("no array " + name);
    return it->second;
  }
  bool has(const std::string& name) const { return bufs.count(name) != 0; }
  // Row i of a T array (element i of a per-row scalar), or of a float64 one.
  T* t(const std::string& name, long i = 0) {
    Buffer& b = buf(name);
    if (b.spec.f64 || b.spec.i64) throw std::runtime_error(name + " is not in T");
    return reinterpret_cast<T*>(b.data()) + i * b.row_len;
  }
  double* f64(const std::string& name, long i = 0) {
    Buffer& b = buf(name);
    if (!b.spec.f64) throw std::runtime_error(name + " is not float64");
    return reinterpret_cast<double*>(b.data()) + i * b.row_len;
  }
  long* i64(const std::string& name) {
    Buffer& b = buf(name);
    if (!b.spec.i64) throw std::runtime_error(name + " is not int64");
    return reinterpret_cast<long*>(b.data());
  }
  // Element j of an array as double (inputs generation, comparisons).
  double get(const Buffer& b, long j) const {
    if (b.spec.i64) return double(reinterpret_cast<const long*>(b.data())[j]);
    if (b.spec.f64) return reinterpret_cast<const double*>(b.data())[j];
    return double(reinterpret_cast<const T*>(b.data())[j]);
  }
  void set(Buffer& b, long j, double v) {
    if (b.spec.i64) reinterpret_cast<long*>(b.data())[j] = long(v);
    else if (b.spec.f64) reinterpret_cast<double*>(b.data())[j] = v;
    else reinterpret_cast<T*>(b.data())[j] = T(v);
  }
};

}  // namespace emu_test
