"""Which GPUs the compiled CUDA kernels run on, from the architectures they were built for
(``build_info()["cuda_archs"]``: CMake's syntax with commas, ``80-real,90-real,90-virtual``;
a plain ``90`` is machine code and PTX)."""
from __future__ import annotations

import functools
from typing import Tuple

import torch


def runs_on(capability: Tuple[int, int], archs: str) -> bool:
    """Whether kernels built for ``archs`` run on a GPU of compute ``capability`` (major, minor).

    Machine code for X.y runs on X.z with z ≥ y (same major version); PTX for X.y is compiled
    by the driver for any GPU of capability ≥ X.y.
    """
    cc = 10 * capability[0] + capability[1]
    for item in filter(None, (s.strip() for s in archs.replace(",", ";").split(";"))):
        num, _, kind = item.partition("-")
        num = num.rstrip("af")  # 90a, 100f: architecture-specific variants
        if not num.isdigit():
            continue
        arch = int(num)
        if kind in ("", "real") and arch // 10 == cc // 10 and arch <= cc:
            return True
        if kind in ("", "virtual") and arch <= cc:
            return True
    return False


@functools.lru_cache(maxsize=None)
def check_device(index: int, archs: str) -> None:
    """A clear error when the kernels cannot run on CUDA device ``index`` (cached per device)."""
    major, minor = torch.cuda.get_device_capability(index)
    if not runs_on((major, minor), archs):
        name = torch.cuda.get_device_name(index)
        raise RuntimeError(
            f"divaext: the CUDA kernels were built for architectures {archs!r}, which cannot run on "
            f"cuda:{index} ({name}, compute capability {major}.{minor}); rebuild divaext on this machine "
            f"(the default takes the architectures of the installed torch) or with "
            f"-Ccmake.define.DIVAEXT_CUDA_ARCHITECTURES={major}{minor}")
