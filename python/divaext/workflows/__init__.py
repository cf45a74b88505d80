"""The DIVA workflows on top of the dataset derivative (arXiv 2111.09785, Sec. 5):

- :func:`detect`: score samples by the derivative and flag the likely mislabeled ones (the
  cut estimated from the data by confident learning);
- :func:`loo_pred_probs`: calibrated leave-one-out class probabilities (cleanlab-ready);
- :func:`reweight`: a few large normalised gradient steps on the sample weights;
- :func:`extend` / :func:`extend_with_label_names`: grow a core set from a pool;
- :func:`select_lambda`: the ridge strength by LOO error over a grid, from one eigendecomposition;
- :func:`augmentation_weights`: each data transformation's share after reweighting.

All accept torch tensors or numpy arrays on CPU or CUDA, compute on the features' device and
return their per-sample results on the CPU: NumPy arrays for NumPy features, tensors for
tensors (:mod:`.returns`). The per-sample tables (``to_dataframe()``, and the files of the
``divaext`` command) are defined once in :mod:`.table`.
"""
from .augment import AugmentResult, augmentation_weights
from .detect import DetectResult, detect
from .probs import LooProbs, loo_pred_probs
from .extend import ExtendResult, LabelNameResult, extend, extend_with_label_names
from .reweight import ReweightResult, reweight
from .select_lambda import LambdaResult, default_grid, select_lambda

__all__ = [
    "AugmentResult", "DetectResult", "ExtendResult", "LabelNameResult", "LambdaResult", "LooProbs", "ReweightResult",
    "augmentation_weights", "default_grid", "detect", "loo_pred_probs", "extend", "extend_with_label_names", "reweight",
    "select_lambda",
]
