"""How the workflows hand their results back: NumPy arrays for NumPy input, tensors for tensors.

The workflows compute on torch tensors whatever they are given; a user who passed NumPy
arrays (or a pandas frame, or lists) should not have to call ``.numpy()`` on every field of
the answer. Each public workflow ends with :func:`like_input` on its result object, the one
place where that conversion happens (inner calls between workflows pass tensors, so they keep
tensors and nothing is converted twice).
"""
from __future__ import annotations

import os
import sys
from typing import NamedTuple, TypeVar

import numpy as np

R = TypeVar("R", bound=NamedTuple)


def wants_numpy(features) -> bool:
    """True unless the features came as torch tensors: a tensor (or a list of tensor blocks)
    gets tensors back; a NumPy array, a memmap, a pandas object, nested lists of numbers or a
    path to a file of rows get NumPy arrays."""
    import torch  # here, not at the top: the tables (table.py) are read without torch

    if isinstance(features, torch.Tensor):
        return False
    if isinstance(features, (np.ndarray, str, os.PathLike)):
        return True
    if type(features).__module__.split(".")[0] == "pandas":
        return True
    if isinstance(features, (list, tuple)):
        return not (len(features) and isinstance(features[0], torch.Tensor))
    return False  # any other source of rows (an iterable of blocks, …): as before, tensors


def to_numpy(v):
    """A tensor as a NumPy array on the CPU (anything else unchanged)."""
    return v.detach().cpu().numpy() if _is_tensor(v) else v


def _is_tensor(v) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: never import it here
    return torch is not None and isinstance(v, torch.Tensor)


def like_input(features, result: R) -> R:
    """``result`` (a NamedTuple of the workflows) with every tensor field as a NumPy array when
    :func:`wants_numpy` of the ``features`` the user passed; unchanged otherwise."""
    if not wants_numpy(features):
        return result
    return result._replace(**{name: to_numpy(v) for name, v in result._asdict().items() if _is_tensor(v)})
