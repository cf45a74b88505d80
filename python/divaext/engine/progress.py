"""Progress bars: tqdm when it is installed (``pip install tqdm``), silently nothing otherwise."""
from __future__ import annotations

import importlib.util
from typing import Iterable, Optional


def progress_bar(it: Iterable, total: Optional[int], enabled: bool, desc: str) -> Iterable:
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


def tqdm_available() -> bool:
    return importlib.util.find_spec("tqdm") is not None
