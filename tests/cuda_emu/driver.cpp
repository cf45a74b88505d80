// Runs every CUDA launcher of csrc/cuda/row_kernels.cu on the emulator (cuda_runtime.h,
// emu_fibers.h) and checks each output element against the CPU formula (launchers.h), for
// float32 and float64, every registered loss, row counts that leave partial blocks, k from 1
// to 1025, exact and Gaussian inputs with special rows (inputs.h). Each launch runs twice, in
// the forward and the reverse schedule, and the two must agree bitwise. Built and run by
// run.py; exit status 1 if any check fails.
//   driver [--max-failing-cases N]   stop after N failing cases (0: run all)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

#include "argmax_probe.h"
#include "checks.h"
#include "inputs.h"
#include "launchers.h"
#include "losses.h"
#include "shuffle_rules.h"

namespace emu_test {
namespace {

using divaext::losses::Losses;

// Losses built from + − × / only: on exact inputs their outputs must match bitwise. A loss
// not listed (exp/log, as cross-entropy) is compared within the tolerance of checks.h.
const std::set<std::string> kDyadicLosses = {"mse"};

constexpr long kRows[] = {0, 1, 31, 32, 33, 8 * 5 + 3};  // one warp per row, 8 rows per block: the
                                                         // last is many blocks, the last one partial
constexpr long kCols[] = {1, 2, 31, 32, 33, 100, 1025};  // k: partial and many lane strides
constexpr long kFeatures[] = {1, 3, 33, 70};            // d
constexpr long kPer = 3;                                 // loss_rows: predictions per target row

struct Stats {
  long cases = 0, failing = 0, max_failing = 0;
  std::set<std::string> checks;  // the checks that failed
  bool stop() const { return max_failing && failing >= max_failing; }
};

void report(const std::string& label, const std::vector<Failure>& fails, Stats& st) {
  if (fails.empty()) return;
  ++st.failing;
  int shown = 0;
  for (const Failure& f : fails) {
    st.checks.insert(f.check);
    if (shown++ < 8) std::printf("FAIL [%s] %s: %s\n", f.check.c_str(), label.c_str(), f.detail.c_str());
  }
  if (fails.size() > 8) std::printf("     ... %zu more for %s\n", fails.size() - 8, label.c_str());
}

template <typename T>
Arrays<T> run_emulated(const Launcher<T>& l, const Arrays<T>& base, int kind, emu::Order order,
                       std::vector<Failure>& fails) {
  Arrays<T> x = base;
  emu::order = order;
  emu::errors.clear();
  const cudaError_t e = l.cuda(x, kind);
  const char* which = order == emu::Order::forward ? "forward" : "reverse";
  if (e != cudaSuccess) fails.push_back({"launch", std::string(which) + " schedule: " + cudaGetErrorString(e)});
  for (const std::string& m : emu::errors) fails.push_back({"emulator", std::string(which) + " schedule: " + m});
  check_launch(base, x, fails);
  return x;
}

template <typename T>
void run_case(const Launcher<T>& l, int kind, Shape s, Mode mode, unsigned long seed, Stats& st) {
  const char* dtype = sizeof(T) == 4 ? "float32" : "float64";
  std::string label = l.name + "<" + dtype + ">";
  if (kind >= 0) label += " loss=" + std::string(Losses::info(kind).name);
  label += " rows=" + std::to_string(s.b) + " d=" + std::to_string(s.d) + " k=" + std::to_string(s.k) +
           (mode == Mode::exact ? " exact" : " gauss");
  Arrays<T> base(l.arrays, s);
  fill_inputs(base, mode, l.special, seed);
  Arrays<T> cpu = base;
  for (long i = 0, m = extent(l.cpu_rows, s); i < m; ++i) l.cpu(cpu, i, kind);

  std::vector<Failure> fails;
  const Arrays<T> fwd = run_emulated(l, base, kind, emu::Order::forward, fails);
  const Arrays<T> rev = run_emulated(l, base, kind, emu::Order::reverse, fails);
  const bool bitwise = mode == Mode::exact && (kind < 0 || kDyadicLosses.count(Losses::info(kind).name));
  const long n = std::max(s.d, s.k) + 1;
  compare_outputs(fwd, cpu, "cpu-mismatch", false, bitwise, n, fails);
  compare_outputs(rev, fwd, "order-mismatch", true, true, n, fails);
  ++st.cases;
  report(label, fails, st);
}

template <typename T>
void run_all(Stats& st) {
  long c = 0;
  for (const Launcher<T>& l : launchers<T>()) {
    for (int kind = l.per_loss ? 0 : -1; kind < (l.per_loss ? Losses::size : 0); ++kind) {
      for (long k : kCols) {
        for (Mode mode : {Mode::exact, Mode::gauss}) {
          if (st.stop()) return;
          // Every k with many blocks (all special rows), and a row count and d rotating over
          // the cases so each launcher meets every row count.
          const long per = l.name == "loss_rows" ? kPer : 1;
          for (long b : {kRows[c % 5], kRows[5]}) run_case(l, kind, Shape{b, kFeatures[c % 4], k, per}, mode, c++, st);
        }
      }
    }
  }
  for (long n : kCols) {
    for (emu::Order order : {emu::Order::forward, emu::Order::reverse}) {
      emu::order = order;
      std::vector<Failure> fails;
      for (const std::string& m : check_argmax<T>(n)) fails.push_back({"argmax-spec", m});
      ++st.cases;
      report(std::string("argmax probe<") + (sizeof(T) == 4 ? "float32" : "float64") + ">", fails, st);
    }
  }
}

}  // namespace
}  // namespace emu_test

int main(int argc, char** argv) {
  emu_test::Stats st;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--max-failing-cases") && i + 1 < argc) st.max_failing = std::atol(argv[++i]);
    else return std::fprintf(stderr, "usage: %s [--max-failing-cases N]\n", argv[0]), 2;
  }
  std::vector<emu_test::Failure> rules;  // the emulator itself first: CUDA's shuffle rules
  for (const std::string& m : emu_test::check_shuffle_rules()) rules.push_back({"shuffle-rules", m});
  emu_test::report("emulator self-test", rules, st);
  emu_test::run_all<float>(st);
  emu_test::run_all<double>(st);
  std::string checks;
  for (const std::string& c : st.checks) checks += " " + c;
  std::printf("emulated CUDA row kernels: %ld cases, %ld failing%s%s\n", st.cases, st.failing,
              checks.empty() ? "" : "; failed checks:", checks.c_str());
  return st.failing ? 1 : 0;
}
