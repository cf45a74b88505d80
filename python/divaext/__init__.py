"""divaext: exact dataset derivatives (DIVA, arXiv 2111.09785) as PyTorch custom ops.

Around fixed features, a learning task is linearised as weighted ridge regression with one-hot
targets. Its leave-one-out predictions have a closed form, so the LOO loss and its derivative
with respect to every sample weight are computed exactly in a few streaming passes over the
features: O(n·d²) time, O(n + d² + d·k) extra memory for the loss and its derivative.
"""
from __future__ import annotations

import torch  # noqa: F401  (must be imported before the compiled core)

from .engine.ops import _C
from .derivative import Derivative, loo_derivative, loo_predictions, val_derivative
from .kernel import kernel_loo_derivative, kernel_loo_predictions, kernel_val_derivative
from .ntk import empirical_ntk
from .engine import dual, method
from . import kernel, ntk
from . import distributed, evaluation, labels, streaming, workflows
from .workflows import (AugmentResult, DetectResult, ExtendResult, LabelNameResult, LambdaResult, LooProbs,
                        ReweightResult, augmentation_weights, detect, extend, extend_with_label_names, loo_pred_probs,
                        reweight, select_lambda)

__version__ = "0.1.0"


def build_info() -> dict:
    """What the compiled core contains: torch it was built against, CUDA kernels, archs."""
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


def __getattr__(name):  # lazy: the estimator imports scikit-learn (~2 s) when it is installed
    if name in ("RidgeClassifier", "RidgeRegressor"):
        from . import estimator
        return getattr(estimator, name)
    raise AttributeError(f"module 'divaext' has no attribute {name!r}")


__all__ = [
    "Derivative", "build_info", "loo_derivative", "loo_predictions", "val_derivative", "__version__",
    "kernel_loo_derivative", "kernel_loo_predictions", "kernel_val_derivative", "empirical_ntk",
    "dual", "kernel", "method", "ntk",
    "distributed", "streaming", "workflows", "evaluation", "labels",
    "detect", "loo_pred_probs", "reweight", "extend", "extend_with_label_names", "select_lambda", "augmentation_weights",
    "RidgeClassifier", "RidgeRegressor",
    "DetectResult", "LooProbs", "ReweightResult", "ExtendResult", "LabelNameResult", "LambdaResult", "AugmentResult",
]

