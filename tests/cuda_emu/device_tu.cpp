// The device side of the emulated build, one translation unit: csrc/cuda/row_kernels.cu with
// its launches rewritten (row_kernels_emu.cu, written by build.py into the build folder) and
// the probe kernels of the argmax rule and of the emulator's shuffles. The driver (driver.cpp, the CPU side) links against it.
#include "row_kernels_emu.cu"
#include "argmax_kernel.h"
#include "shuffle_probe.h"
