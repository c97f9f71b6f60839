"""Plain supervised training on in-memory tensors: the demo universe's zoo and pretrained weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int,
                     lr: float = 1e-2, batch_size: int = 128) -> nn.Module:
    """AdamW with a cosine schedule over `epochs`, seeded so the same call gives the same weights."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05, fused=True)
    steps = epochs * -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            batch = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()
