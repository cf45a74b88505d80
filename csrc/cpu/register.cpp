// CPU implementations of every divaext op: the device-generic passes with CPU row kernels.
#include <torch/library.h>

#include "cpu/row_kernels.h"
#include "passes.h"

TORCH_LIBRARY_IMPL(divaext, CPU, m) { DIVAEXT_REGISTER_PASSES(m, ::divaext::cpu::RowKernels); }
