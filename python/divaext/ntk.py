"""Empirical neural tangent kernel: the kernel of a network linearised in (some of) its
parameters, ``K = J Jᵀ`` with ``J`` [n,P] the per-sample gradients of a scalar output.

Feed it to :func:`divaext.kernel.kernel_loo_derivative` to get DIVA's dataset derivative of
the linearised network (the paper's setting) without ever forming n × P features: ``J`` is
built chunk by chunk (``chunk_size`` samples × P at a time, two chunks alive at once) and
each block of ``K`` is the product of two chunks. The price is recomputing a chunk's
gradients once per block row: about n² / (2·chunk_size) per-sample gradients in all.

**Networks with k outputs** (``output=``). DIVA's ridge model uses one kernel for all k target
columns, so one scalar per sample is differentiated. The default ``"sum"`` takes the sum of
the outputs divided by √k (one gradient per sample): for a linear last layer it gives that
layer's part of the kernel exactly as the class-averaged kernel ``"trace"`` does (both are
φᵢ·φⱼ there, φ the penultimate features), and for the rest of the network it is the usual
cheap stand-in for the class-averaged kernel (the "pseudo-NTK"). ``"trace"`` computes
``(1/k) Σ_c J_c J_cᵀ`` exactly at k times the cost and memory; an ``int`` selects one output;
a callable maps the model's output for a chunk, [c, ...], to one scalar per sample [c].
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch

__all__ = ["empirical_ntk"]

Output = Union[str, int, Callable[[torch.Tensor], torch.Tensor]]


def _select(model: torch.nn.Module, params) -> dict:
    named = dict(model.named_parameters())
    if params is None:
        chosen = {k: p for k, p in named.items() if p.requires_grad}
    elif callable(params):
        chosen = {k: p for k, p in named.items() if params(k, p)}
    else:
        names = [params] if isinstance(params, str) else list(params)
        unknown = [k for k in names if k not in named]
        if unknown:
            raise ValueError(f"divaext: empirical_ntk: unknown parameter names {unknown}; "
                             f"the model has {sorted(named)}")
        chosen = {k: named[k] for k in names}
    if not chosen:
        raise ValueError("divaext: empirical_ntk: no parameters selected (params=None takes the ones with "
                         "requires_grad=True)")
    return {k: p.detach() for k, p in chosen.items()}


def _reducer(output: Output, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """out [c, k...] -> [c] or, for "trace", [c, k] divided by √k (so J Jᵀ sums to the mean)."""
    if callable(output):
        return output
    if isinstance(output, str):
        if output == "sum":
            return lambda out: out.reshape(out.shape[0], -1).sum(1) / math.sqrt(k)
        if output == "trace":
            return lambda out: out.reshape(out.shape[0], -1) / math.sqrt(k)
        raise ValueError(f"divaext: empirical_ntk: output must be 'sum', 'trace', an output index or a callable, "
                         f"got {output!r}")
    if isinstance(output, int) and not isinstance(output, bool):
        if not -k <= output < k:
            raise ValueError(f"divaext: empirical_ntk: output index {output} out of range for {k} outputs")
        return lambda out: out.reshape(out.shape[0], -1)[:, output]
    raise TypeError(f"divaext: empirical_ntk: output must be 'sum', 'trace', an int or a callable, got "
                    f"{type(output).__name__}")


# Layers whose output in training mode depends on the batch (batch norm, which also updates its
# running statistics) or on chance (dropout): in that mode the model is no fixed function.
_MODE_DEPENDENT = (torch.nn.modules.batchnorm._NormBase, torch.nn.modules.dropout._DropoutNd)


def _check_model(model: torch.nn.Module, inputs: torch.Tensor, chosen: dict, device) -> torch.device:
    """Everything checkable before the model runs; returns the compute device."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"divaext: empirical_ntk: model must be a torch.nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules()
                if m.training and isinstance(m, _MODE_DEPENDENT)]
    if training:
        raise ValueError(f"divaext: empirical_ntk: {', '.join(training)} in training mode (batch norm or dropout): "
                         "the model's output then depends on the batch or on chance, and batch norm would update "
                         "its running statistics; call model.eval() first")
    device = torch.device(device) if device is not None else next(iter(chosen.values())).device
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"divaext: empirical_ntk: device must be a CPU or CUDA device, got {device} "
                         "(the kernel needs values)")
    dtype = next(iter(chosen.values())).dtype
    if inputs.is_floating_point() and inputs.dtype != dtype:
        raise TypeError(f"divaext: empirical_ntk: inputs are {inputs.dtype} but the model's parameters are {dtype}; "
                        f"pass inputs.to({dtype}) or convert the model")
    return device


class _Restored:
    """Puts back, on exit (after an error too), every parameter and buffer object of every
    module — under each name a shared submodule is registered — and every training flag, so
    that the model is exactly as it was whatever torch.func did with it."""

    def __init__(self, model: torch.nn.Module):
        self.saved = [(m, dict(m._parameters), dict(m._buffers), m.training)
                      for m in model.modules(remove_duplicate=False)]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m, params, buffers, training in self.saved:
            m._parameters.clear()
            m._parameters.update(params)
            m._buffers.clear()
            m._buffers.update(buffers)
            m.training = training
        return False


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm  # optional dependency
    except ImportError:
        return None
    return tqdm(total=total, desc="empirical NTK blocks", leave=False)


def empirical_ntk(model: torch.nn.Module, inputs: torch.Tensor, *, params=None, output: Output = "sum",
                  chunk_size: int = 64, device=None, progress: bool = True) -> torch.Tensor:
    """The empirical NTK ``K = J Jᵀ`` [n,n] of ``model`` at ``inputs`` [n, ...].

    Args:
        model: a module mapping a batch [c, ...] to outputs [c] or [c, k...]; it is called in
            its current mode (call ``model.eval()`` first if it has dropout or batch norm).
        inputs: (n, ...) tensor of samples.
        params: which parameters the network is linearised in: None (all with
            ``requires_grad``), a list of names from ``model.named_parameters()``, or a
            predicate ``(name, parameter) -> bool``.
        output: ``"sum"`` (default), ``"trace"``, an output index or a callable; see the
            module docstring.
        chunk_size: samples per gradient chunk (memory ~2·chunk_size·P, ×k for "trace").
        device: where to compute (default: the device of the first selected parameter);
            parameters, buffers and input chunks are copied there (the model is not moved);
            CPU or CUDA.
        progress: show a tqdm progress bar over the blocks if tqdm is installed.
    The model is left exactly as it was (parameters, buffers, training flags), after an error
    too. Batch norm or dropout in training mode is refused (call ``model.eval()``): the output
    would depend on the batch or on chance. A model returning a tuple needs a callable
    ``output``. Floating-point inputs must have the parameters' dtype.
    Returns:
        (n, n) tensor in the parameters' dtype on ``device``: symmetric PSD.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError("divaext: empirical_ntk: inputs must be a tensor (n, ...) with n ≥ 1")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"divaext: empirical_ntk: chunk_size must be a positive integer, got {chunk_size!r}")
    chosen = _select(model, params)
    device = _check_model(model, inputs, chosen, device)
    with _Restored(model):
        return _ntk(model, inputs, chosen, output, chunk_size, device, progress)


def _ntk(model, inputs, chosen, output, chunk_size, device, progress):
    from torch.func import functional_call, grad, jacrev, vmap

    chosen = {k: v.to(device) for k, v in chosen.items()}
    # The model itself is not moved: every parameter and buffer is passed to functional_call
    # on ``device``, the selected ones as the variables of differentiation; buffers are copies,
    # so nothing the forward pass writes into them reaches the model.
    fixed = {k: v.detach().to(device) for k, v in model.named_parameters()}
    fixed.update({k: v.detach().to(device, copy=True) for k, v in model.named_buffers()})
    n = inputs.shape[0]
    with torch.no_grad():
        probe = functional_call(model, fixed, (inputs[:1].to(device),))
    if not isinstance(probe, torch.Tensor) and not callable(output):
        raise TypeError(f"divaext: empirical_ntk: the model returns a {type(probe).__name__}, not a tensor; pass "
                        "output=a callable mapping it to one scalar per sample, e.g. output=lambda out: out[0].sum(1)")
    k = max(1, probe[0].numel()) if isinstance(probe, torch.Tensor) else 1
    reduce = _reducer(output, k)
    multi = output == "trace"

    def scalar(p, x):  # one sample -> scalar (or [k] for "trace")
        out = functional_call(model, {**fixed, **p}, (x[None],))
        return reduce(out)[0]

    per_sample = vmap(jacrev(scalar) if multi else grad(scalar), in_dims=(None, 0))

    def jac(start: int) -> torch.Tensor:
        """[c, P] (or [c·k, P] for "trace": rows sample-major) gradients of a chunk."""
        x = inputs[start:start + chunk_size].to(device)
        g = per_sample(chosen, x)
        rows = x.shape[0] * (k if multi else 1)
        return torch.cat([t.reshape(rows, -1) for t in g.values()], dim=1)

    dtype = next(iter(chosen.values())).dtype
    K = torch.empty(n, n, dtype=dtype, device=device)
    starts = list(range(0, n, chunk_size))
    bar = _progress(len(starts) * (len(starts) + 1) // 2, progress)
    try:
        for bi, i in enumerate(starts):
            Ji = jac(i)
            for j in starts[bi:]:
                Jj = Ji if j == i else jac(j)
                block = Ji @ Jj.T
                if multi:  # sum the k×k class blocks' diagonals: Σ_c J_c(i)·J_c(j)
                    ci, cj = block.shape[0] // k, block.shape[1] // k
                    block = block.reshape(ci, k, cj, k).diagonal(dim1=1, dim2=3).sum(-1)
                K[i:i + block.shape[0], j:j + block.shape[1]] = block
                K[j:j + block.shape[1], i:i + block.shape[0]] = block.T
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return K

