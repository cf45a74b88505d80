// The Python module shell. Importing `divaext._C` loads this shared library, whose static
// initialisers (ops.cpp, */register.cpp) register the ops under torch.ops.divaext. No pybind11:
// the ops are reached through the dispatcher, so the module only carries build facts.
#include <Python.h>

#ifndef DIVAEXT_CUDA_KERNELS
#define DIVAEXT_CUDA_KERNELS "none"
#endif
#ifndef DIVAEXT_CUDA_ARCHS
#define DIVAEXT_CUDA_ARCHS ""
#endif
#ifndef DIVAEXT_TORCH_VERSION
#define DIVAEXT_TORCH_VERSION "unknown"
#endif

static PyModuleDef divaext_module = {
    PyModuleDef_HEAD_INIT, "_C",
    "divaext compiled core; ops live under torch.ops.divaext", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&divaext_module);
  if (m == nullptr) return nullptr;
#ifdef DIVAEXT_WITH_CUDA
  const int with_cuda = 1;
#else
  const int with_cuda = 0;
#endif
  // "built": CUDA ops registered; "compile-checked": kernels compiled with nvcc but torch has
  // no CUDA, so nothing is registered for CUDA; "none": no nvcc at build time.
  if (PyModule_AddIntConstant(m, "with_cuda", with_cuda) < 0 ||
      PyModule_AddStringConstant(m, "cuda_kernels", DIVAEXT_CUDA_KERNELS) < 0 ||
      PyModule_AddStringConstant(m, "cuda_archs", DIVAEXT_CUDA_ARCHS) < 0 ||
      PyModule_AddStringConstant(m, "torch_version", DIVAEXT_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(m, "compiler", __VERSION__) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
