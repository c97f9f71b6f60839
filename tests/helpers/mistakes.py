"""Real mistakes of a demo universe's pretrained model, as tensors for tests of the loop and the engine."""
from __future__ import annotations

import torch
from torch import nn

from sweep.data.demo import Demo
from sweep.data.image_files import load_image
from sweep.data.images import model_transform
from sweep.run.selection import sample_mistakes


def demo_mistakes(demo: Demo, arch: str, n: int, seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, int,
                                                                                               float]]]:
    """The pretrained `arch` (eval mode) and `n` of its sampled mistakes, as (x of shape (C, H, W),
    label, loss at the pretrained weights), easiest first."""
    model = demo.pretrained(arch).eval()
    transform = model_transform(model, training=False)
    view = lambda example: transform(load_image(example.path))
    return model, [(view(e), e.label, loss) for e, loss in sample_mistakes(model, demo.examples, view, n, seed)]
