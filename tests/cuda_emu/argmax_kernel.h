// The argmax probe (argmax_probe.h) on the device side: one warp per row, like the real
// kernels, returning WarpRow::argmax's index of each row. Compiled with the device code.
#pragma once
#include "cuda/warp_row.cuh"

namespace emu_test {

template <typename T>
__global__ void argmax_probe_kernel(const T* p, long rows, long n, long* index) {
  divaext::cuda::WarpRow r;
  const long i = r.row();
  if (i >= rows) return;
  r.put(index + i, r.argmax(p + i * n, n).index);
}

template <typename T>
void launch_argmax_probe(const T* p, long rows, long n, long* index) {
  namespace cu = divaext::cuda;
  emu::launch(emu::config(cu::grid_for(rows), cu::kWarp * cu::kWarpsPerBlock), argmax_probe_kernel<T>, p, rows, n,
              index);
}
template void launch_argmax_probe<float>(const float*, long, long, long*);
template void launch_argmax_probe<double>(const double*, long, long, long*);

}  // namespace emu_test
