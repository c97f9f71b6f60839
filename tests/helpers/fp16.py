"""A model whose fp16 gradients are known in closed form, for tests of the original's loss scaler."""
from __future__ import annotations

import numpy as np
import torch

FP16_MAX = 65504.0


def linear_mistake(initial_loss: float, scale_input: float) -> tuple[torch.nn.Module, torch.Tensor, int]:
    """logits = W x over 4 classes, label 0 at logit 0, a rival at r > 0 (so a mistake), the rest far
    below: loss = log(1 + e^r) = `initial_loss` (> log 2, as for any mistake)."""
    logits = torch.tensor([0.0, float(np.log(np.expm1(initial_loss))), -30.0, -30.0])
    model = torch.nn.Linear(1, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_((logits / scale_input)[:, None])
    return model, torch.full((1, 1), scale_input), 0


def scaler_skips(model: torch.nn.Module, x: torch.Tensor, y: int, device_type: str) -> int:
    """How many updates a fresh GradScaler skips before one goes through, from its arithmetic alone:
    at scale s, nll_loss's gradient -s reaches the fp16 log-probabilities (inf while s > 65,504), and
    the weight gradient (softmax - onehot) * s * x must fit fp16. Each overflow halves s."""
    with torch.no_grad(), torch.autocast(device_type, dtype=torch.float16):
        p = torch.softmax(model(x).float(), 1)[0].double().cpu().numpy()
    scale_input = float(x.flatten()[0])
    skips, scale = 0, 65536.0
    while scale > FP16_MAX or np.abs((p - np.eye(len(p))[y]) * scale * scale_input).max() > FP16_MAX:
        skips, scale = skips + 1, scale / 2
    return skips
