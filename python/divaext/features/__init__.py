"""Features from frozen pretrained models, for the derivative to run on.

| module | what it holds |
| --- | --- |
| ``embed`` | ``embed_images`` / ``embed_texts``: batched, cached embedding |
| ``models`` | the pretrained models (offline MiniLM, EfficientNet-Lite0) and the image transform |
| ``cache`` | the ``.npy`` embedding cache keyed by a SHA-256 of inputs, model and settings |
"""
from .embed import (IMAGENET_MEAN, IMAGENET_STD, EfficientNetLite0Features, embed_images, embed_texts,
                    image_transform, load_efficientnet_lite0, load_minilm)

__all__ = ["embed_images", "embed_texts", "load_minilm", "load_efficientnet_lite0", "image_transform",
           "EfficientNetLite0Features", "IMAGENET_MEAN", "IMAGENET_STD"]
