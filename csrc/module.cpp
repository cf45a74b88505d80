// The Python module shell. Importing `divaext._C` loads this shared library, whose static
// initialisers (ops.cpp, */register.cpp) register the ops under torch.ops.divaext. No pybind11:
// the ops are reached through the dispatcher, so the module only carries build facts.
#include <Python.h>

#include "losses.h"

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

// The loss registry (losses.h) for Python, whose loss names come from here only:
// losses = {name: code}, loss_min_columns = (min_columns of code 0, 1, …).
static PyObject* loss_codes(bool min_columns) {
  using divaext::losses::Losses;
  PyObject* out = min_columns ? PyTuple_New(Losses::size) : PyDict_New();
  for (int code = 0; out != nullptr && code < Losses::size; ++code) {
    const divaext::losses::Info loss = Losses::info(code);
    PyObject* v = PyLong_FromLong(min_columns ? loss.min_columns : code);
    const int rc = v == nullptr ? -1
                   : min_columns ? PyTuple_SetItem(out, code, Py_NewRef(v))
                                 : PyDict_SetItemString(out, loss.name, v);
    Py_XDECREF(v);
    if (rc < 0) Py_CLEAR(out);
  }
  return out;
}

// PyModule_AddObjectRef that also drops our reference (PyModule_Add is Python >= 3.13 only).
static int add_owned(PyObject* m, const char* name, PyObject* value) {
  const int rc = value == nullptr ? -1 : PyModule_AddObjectRef(m, name, value);
  Py_XDECREF(value);
  return rc;
}

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
      PyModule_AddStringConstant(m, "compiler", __VERSION__) < 0 || add_owned(m, "losses", loss_codes(false)) < 0 ||
      add_owned(m, "loss_min_columns", loss_codes(true)) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
