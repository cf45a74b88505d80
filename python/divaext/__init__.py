"""divaext: exact dataset derivatives (DIVA, arXiv 2111.09785) as PyTorch custom ops.

Around fixed features, a learning task is linearised as weighted ridge regression with one-hot
targets. Its leave-one-out predictions have a closed form, so the LOO loss and its derivative
with respect to every sample weight are computed exactly in a few streaming passes over the
features: O(n·d²) time, O(n + d² + d·k) extra memory for the loss and its derivative.

The package's map: docs/extending.md (public functions here, the engine in ``engine/``, the
command in ``cli/``, files in ``io/``, embedding in ``features/``).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Names and the module that defines each. They are imported on first use (PEP 562), so
# ``import divaext`` costs nothing until a name is used (``divaext --version`` needs no torch),
# and ``divaext.features`` is there without importing its heavy optional models.
_FROM = {
    ".derivative": ("Derivative", "loo_derivative", "loo_predictions", "val_derivative"),
    ".kernel": ("kernel_loo_derivative", "kernel_loo_predictions", "kernel_val_derivative"),
    ".ntk": ("empirical_ntk",),
    ".workflows": ("AugmentResult", "DetectResult", "ExtendResult", "LabelNameResult", "LambdaResult", "LooProbs",
                   "ReweightResult", "augmentation_weights", "detect", "extend", "extend_with_label_names",
                   "loo_pred_probs", "reweight", "select_lambda"),
    ".estimator": ("LooRidgeClassifier", "LooRidgeRegressor", "RidgeClassifier", "RidgeRegressor"),  # imports scikit-learn (~2 s) when used
}
_NAMES = {name: module for module, names in _FROM.items() for name in names}
_SUBMODULES = {"kernel": ".kernel", "ntk": ".ntk", "distributed": ".distributed", "evaluation": ".evaluation",
               "labels": ".labels", "streaming": ".streaming", "workflows": ".workflows", "estimator": ".estimator",
               "features": ".features", "plots": ".plots", "io": ".io", "cli": ".cli", "demo": ".demo",
               "engine": ".engine", "dual": ".engine.dual", "method": ".engine.method"}


def __getattr__(name):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name], __name__)
    else:
        raise AttributeError(f"module 'divaext' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_SUBMODULES))


def build_info() -> dict:
    """What the compiled core contains: torch it was built against, CUDA kernels, archs."""
    import torch

    from .engine.ops import _C
    return {
        "version": __version__,
        "torch_built_against": _C.torch_version,
        "torch_runtime": torch.__version__,
        "compiler": _C.compiler,
        "cpu": True,
        "cuda": bool(_C.with_cuda),
        "cuda_kernels": _C.cuda_kernels,  # "built" | "compile-checked" | "none"
        "cuda_archs": _C.cuda_archs if _C.cuda_kernels != "none" else "",
        "cuda_available_at_runtime": bool(_C.with_cuda and torch.cuda.is_available()),
    }


__all__ = [
    "Derivative", "build_info", "loo_derivative", "loo_predictions", "val_derivative", "__version__",
    "kernel_loo_derivative", "kernel_loo_predictions", "kernel_val_derivative", "empirical_ntk",
    "dual", "kernel", "method", "ntk", "features",
    "distributed", "streaming", "workflows", "evaluation", "labels",
    "detect", "loo_pred_probs", "reweight", "extend", "extend_with_label_names", "select_lambda", "augmentation_weights",
    "LooRidgeClassifier", "LooRidgeRegressor", "RidgeClassifier", "RidgeRegressor",
    "DetectResult", "LooProbs", "ReweightResult", "ExtendResult", "LabelNameResult", "LambdaResult", "AugmentResult",
]
