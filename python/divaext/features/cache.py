"""The embedding cache of :mod:`divaext.features`: a ``.npy`` file plus ``<cache>.key``, a
SHA-256 hash of the inputs and the model, so that other inputs or another model recompute the
embeddings instead of silently returning the old ones."""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Optional, Union

import numpy as np
import torch

from ..io.atomic import atomic_write
from .models import MINILM_NAMES

PathLike = Union[str, "os.PathLike[str]"]


def _feed(h, obj) -> None:
    """Hash ``obj`` (tensors, arrays, strings, numbers, nested lists) into ``h``, type- and
    length-prefixed so that different inputs cannot give the same byte stream."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(obj, (str, bytes)):
        b = obj.encode() if isinstance(obj, str) else obj
        h.update(f"S{len(b)}:".encode() + b)
    elif isinstance(obj, (list, tuple, np.ndarray)):
        h.update(f"L{len(obj)}:".encode())
        for item in obj:
            _feed(h, item)
    else:
        _feed(h, repr(obj))


def model_key(model) -> list:
    """What identifies a model in the cache key: a name as given (lower case), or the class
    and, for an ``nn.Module``, every parameter and buffer (its weights)."""
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model).lower()
        return ["name", "all-minilm-l6-v2" if name in MINILM_NAMES else name]
    key = ["class", f"{type(model).__module__}.{type(model).__qualname__}"]
    if isinstance(model, torch.nn.Module):
        key += [[n, t] for n, t in model.state_dict().items() if isinstance(t, torch.Tensor)]
    return key


def cache_key(*parts) -> str:
    """SHA-256 hex digest of ``parts`` (inputs, model key, settings)."""
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()


def load_cache(cache: Optional[PathLike], n: int, key: str) -> Optional[torch.Tensor]:
    """Return the cached ``(n, d)`` array as a float32 tensor, or None.

    A cache made from other inputs or another model (its ``.key`` file differs from ``key``),
    or with a row count other than ``n``, is ignored with a warning and will be overwritten
    by the fresh result.
    """
    if cache is None or not os.path.exists(cache):
        return None
    key_path = os.fspath(cache) + ".key"
    stored = open(key_path, encoding="utf-8").read().strip() if os.path.exists(key_path) else None
    arr = np.load(cache, allow_pickle=False)
    if stored != key or arr.ndim != 2 or arr.shape[0] != n:
        why = (f"has shape {arr.shape}, expected {n} rows" if arr.ndim != 2 or arr.shape[0] != n
               else "was computed from other inputs or another model")
        # stacklevel 3: the warning names the caller of embed_images / embed_texts
        warnings.warn(f"feature cache {os.fspath(cache)!r} {why}; recomputing and overwriting it",
                      RuntimeWarning, stacklevel=3)
        return None
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def save_cache(cache: Optional[PathLike], feats: torch.Tensor, key: str) -> None:
    """Write ``feats`` to ``cache`` and ``key`` to ``cache.key``, each atomically; the key
    last, so a key never vouches for old features."""
    if cache is None:
        return
    path = os.fspath(cache)
    atomic_write(path, lambda f: np.save(f, feats.numpy(), allow_pickle=False))
    atomic_write(path + ".key", lambda f: f.write(key.encode() + b"\n"))
