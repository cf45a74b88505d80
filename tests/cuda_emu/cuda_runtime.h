// A stand-in for <cuda_runtime.h> so that csrc/cuda/row_kernels.cu and warp_row.cuh compile
// with g++ unchanged and run on the CPU (tests only; csrc/README.md, "Emulated CUDA kernels").
// Each GPU thread is a fiber (emu_fibers.h); the warp intrinsics below block the calling
// fiber until every live lane of its warp (block) has reached the same intrinsic, as on the
// device, and report what CUDA leaves undefined (a mask naming an exited lane, a read of a
// lane that does not take part, mismatched collectives) as errors.
#pragma once
#include <cstddef>
#include <cstdint>

// Qualifiers: host code is device code here. __restrict__ is a GNU C++ keyword already.
// __shared__ as static: one variable per kernel instantiation, which is per block because
// blocks run one after another (never concurrently) in the emulator.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};

constexpr int warpSize = 32;

// The built-in indices of the running GPU thread: the scheduler sets them before it switches
// to a thread's fiber (one OS thread runs every fiber, so plain globals suffice).
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#include "emu_fibers.h"

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return emu::shuffle(emu::Op::shfl_idx, mask, var, src_lane, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return emu::shuffle(emu::Op::shfl_up, mask, var, int(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return emu::shuffle(emu::Op::shfl_down, mask, var, int(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return emu::shuffle(emu::Op::shfl_xor, mask, var, lane_mask, width);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::shuffle(emu::Op::syncwarp, mask, 0, 0, warpSize); }
inline void __syncthreads() { emu::shuffle(emu::Op::syncthreads, 0u, 0, 0, warpSize); }
// The lanes of the caller's warp that have not exited (the emulator has no divergence).
inline unsigned __activemask() { return emu::live_lanes(); }

// Launch errors are sticky until read, as cudaGetLastError does for non-fatal errors.
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "unspecified launch failure";
  }
}
