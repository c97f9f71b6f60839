"""A loss scaler per copy of the batched engine (train.precision=fp16_scaler, the original's arithmetic).

Each copy's scaler is what a fresh `torch.amp.GradScaler` of its own example would be: the same
initial scale, growth and backoff, the gradient unscaled by the same reciprocal, and an update whose
gradient is not finite skipped (it still counts as a step) with the scale halved. An overflow in one
copy skips that copy's update only. The state is one tensor per quantity, a value per copy.
"""
from __future__ import annotations

import torch

# torch.amp.GradScaler's defaults, which the original scripts used
INIT_SCALE, GROWTH_FACTOR, BACKOFF_FACTOR, GROWTH_INTERVAL = 2.0 ** 16, 2.0, 0.5, 2000


class LossScalers:
    """K loss scalers: `scale` multiplies each copy's loss before its backward pass."""

    def __init__(self, k: int, device: torch.device):
        self.scale = torch.full((k,), INIT_SCALE, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros(k, dtype=torch.int32, device=device)

    def reset(self, i: int) -> None:
        """Copy i gets a fresh scaler."""
        self.scale[i], self.growth_tracker[i] = INIT_SCALE, 0

    def keep(self, indices: list[int]) -> None:
        """Keep the scalers of these copies, in this order."""
        self.scale, self.growth_tracker = self.scale[indices], self.growth_tracker[indices]

    @torch.no_grad()
    def unscale_(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Divide each copy's gradients (stacked, (K, ...)) by its scale in place, as GradScaler.unscale_
        does (times the fp32 reciprocal of the scale, computed in fp64); returns whether each copy's
        gradient holds a value that is not finite (its update is then skipped)."""
        inverse = self.scale.double().reciprocal().float()
        found = torch.zeros(len(self.scale), dtype=torch.bool, device=self.scale.device)
        for grad in grads:
            found |= ~torch.isfinite(grad).flatten(1).all(1)
            grad.mul_(inverse.view(-1, *([1] * (grad.dim() - 1))))
        return found

    def update(self, found: torch.Tensor) -> None:
        """After a step, as GradScaler.update: the scale of each copy that overflowed backs off and its
        growth tracker restarts; the others count a success, and grow their scale every
        GROWTH_INTERVAL successes in a row (unless the grown scale is not finite)."""
        successes = self.growth_tracker + 1
        grown = self.scale * GROWTH_FACTOR
        grow = ~found & (successes == GROWTH_INTERVAL)
        self.scale = torch.where(found, self.scale * BACKOFF_FACTOR,
                                 torch.where(grow & torch.isfinite(grown), grown, self.scale))
        self.growth_tracker = torch.where(found | grow, 0, successes).to(torch.int32)
