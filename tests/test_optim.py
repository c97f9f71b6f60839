"""The fused optimizer gives torch.optim's fused updates bit for bit, skipping parameters without a gradient."""
import pytest
import torch

from sweep.config import Optimizer
from sweep.training.fused_optimizer import FusedOptimizer

SETTINGS = [(Optimizer.adamw, 0.0, 0.0), (Optimizer.adamw, 0.05, 0.0), (Optimizer.adam, 0.01, 0.0),
            (Optimizer.sgd, 0.0, 0.0), (Optimizer.sgd, 0.0, 0.9), (Optimizer.sgd, 0.01, 0.9)]


def reference(params, name, lr, weight_decay, momentum):
    if name == Optimizer.sgd:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
    kind = torch.optim.AdamW if name == Optimizer.adamw else torch.optim.Adam
    return kind(params, lr=lr, weight_decay=weight_decay, fused=True)


@pytest.mark.parametrize("name,weight_decay,momentum", SETTINGS)
def test_updates_match_torch_optim_bit_for_bit(name, weight_decay, momentum):
    generator = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (10, 8)]
    initial = [torch.randn(s, generator=generator) for s in shapes]
    ours = [p.clone().requires_grad_() for p in initial]
    theirs = [p.clone().requires_grad_() for p in initial]
    ours_optimizer = FusedOptimizer(ours, name, 1e-2, weight_decay, momentum)
    # one torch optimizer per parameter: each parameter's state must be its own, as the batched
    # engine needs (torch's fused SGD cannot start one parameter's momentum later than another's)
    theirs_optimizers = [reference([p], name, 1e-2, weight_decay, momentum) for p in theirs]
    for step in range(6):
        grads = [torch.randn(s, generator=generator) for s in shapes]
        for i, (a, b, g) in enumerate(zip(ours, theirs, grads, strict=True)):
            skipped = i == 1 and step in (0, 3)  # a parameter starting late and pausing once
            a.grad, b.grad = (None, None) if skipped else (g.clone(), g.clone())
        ours_optimizer.step()
        for optimizer in theirs_optimizers:
            optimizer.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(ours[0], initial[0])
    ours_optimizer.zero_grad()
    assert all(p.grad is None for p in ours)


def test_mixed_dtypes_are_refused():
    params = [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    with pytest.raises(ValueError, match="one device and dtype"):
        FusedOptimizer(params, Optimizer.adamw, 1e-3, 0.0, 0.0)
