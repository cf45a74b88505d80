"""Two gloo processes on this machine, each running ``fn(rank)`` on its shard: the pattern of
the sharded tests (tests/test_distributed.py has the fixture version)."""
from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank, port, tmp, fn):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out = fn(rank)
    except BaseException as err:  # noqa: BLE001  (the parent reports it)
        out = {"crash": repr(err)}
    torch.save(out, os.path.join(tmp, f"rank{rank}.pt"))
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def run_two_ranks(fn, tmp_path, timeout_s: float = 120) -> list:
    """[fn(0), fn(1)] (dicts) from 2 spawned ranks of the default group; ``fn`` a module-level
    function. Fails the test if a rank crashed or the ranks did not finish in ``timeout_s``."""
    from test_distributed import _free_port

    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path), fn), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1) and time.monotonic() < deadline:
        pass
    if any(p.is_alive() for p in ctx.processes):
        for p in ctx.processes:
            p.kill()
        pytest.fail(f"the 2 ranks did not finish within {timeout_s:g} s (a collective hung)")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r in ranks:
        assert "crash" not in r, r
    return ranks
