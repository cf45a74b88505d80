"""One NaN/inf rule on every device: the loss kernels treat non-finite logits as the float64
reference does. argmax (csrc/row_reducer.h, rows::ArgMax) follows torch.argmax: NaN is the
maximum (its first index wins), otherwise the first index of the maximum, so an all −inf
row has index 0. Cross-entropy itself is NaN (or ±inf) on such rows wherever the reference's
formula is. (The emulated CUDA kernels are held to the CPU's results on these rows by
tests/test_cuda_emu.py; here the CPU, or a real GPU, against the reference.)"""
from __future__ import annotations

import math

import pytest
import torch

from divaext.engine import reference as R
from divaext.engine.ops import _C, ops

INF, NAN = math.inf, math.nan
# (logits, label): the issue's rows (all −inf, NaN first, all NaN), NaN or ±inf elsewhere,
# ties (the first index wins) and a constant row.
ROWS = [
    ([-INF, -INF, -INF, -INF], 0), ([NAN, 1, 2, 0], 0), ([NAN, NAN, NAN, NAN], 0), ([NAN, NAN, NAN, NAN], 2),
    ([1, NAN, 0, 0], 0), ([1, NAN, 0, 0], 1), ([-INF, 1, 2, 0], 2), ([-INF, 1, 2, 0], 0), ([INF, 1, 2, 0], 0),
    ([INF, 1, 2, 0], 1), ([1, INF, NAN, INF], 2), ([0, 3, 3, 1], 1), ([0, 3, 3, 1], 2), ([2, 2, 2, 2], 0),
    ([2, 2, 2, 2], 3), ([-INF, -INF, 5, -INF], 2),
]


@pytest.mark.parametrize("loss", sorted(_C.losses))
def test_nonfinite_rows_match_the_reference(device, dtype, loss):
    f = torch.tensor([r for r, _ in ROWS], dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.tensor([c for _, c in ROWS]), 4).double()
    got = ops.loss_rows(f[:, None].to(device, dtype), y.to(device, dtype), _C.losses[loss])[:, 0].cpu()
    want = torch.stack([R.loss(f[i:i + 1], y[i:i + 1], loss) for i in range(len(ROWS))])
    assert torch.equal(got.isnan(), want.isnan()), (got, want)
    torch.testing.assert_close(got[~want.isnan()], want[~want.isnan()], rtol=1e-6, atol=1e-6)


def test_issue_rows_are_not_misclassified(device):
    # all −inf, NaN first, all NaN: argmax 0 = the label, so ce_misclassified is 0 with a 0 gradient
    f = torch.tensor([[-INF] * 4, [NAN, 1, 2, 0], [NAN] * 4], dtype=torch.float64, device=device)
    y = torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64, device=device)
    total, g = ops.loss_grad(f, y, torch.ones(3, dtype=torch.float64, device=device), _C.losses["ce_misclassified"])
    assert total.item() == 0.0 and g.abs().sum().item() == 0.0
