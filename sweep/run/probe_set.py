"""A run's probe set: drawn once (persisted in probe.csv, so a resumed run evaluates the same images
against the same pretrained verdicts), decoded once per job into the model's input tensors."""
from __future__ import annotations

import logging

import torch

from sweep.config import AUTO, ProbeConfig
from sweep.data.examples import examples_table, table_examples
from sweep.data.images import example_view, read_view
from sweep.errors import UserError
from sweep.run.context import JobContext
from sweep.run.directory import RunDirectory
from sweep.run.draw import Selection, rank_order
from sweep.run.selection import draw_probe
from sweep.training.flops import StepCost
from sweep.training.hardware import torch_format
from sweep.training.probe import Probe

log = logging.getLogger(__name__)

# probe.size=auto: the set's size (how many images are decoded, kept on the device and judged once at
# the pretrained weights); each example is then judged on a prefix of it sized by probe.budget.
AUTO_GPU, AUTO_CPU_SMALL, AUTO_CPU_LARGE, SMALL_PIXELS = 1000, 50, 20, 64 * 64


def probe_size(probe: ProbeConfig, device: torch.device, shape: tuple[int, ...]) -> int:
    """probe.size, or for auto: 1000 images on a GPU; on a CPU 50 for small images (64 px or less),
    20 for larger ones."""
    if probe.size != AUTO:
        return probe.size
    if device.type == "cuda":
        return AUTO_GPU
    return AUTO_CPU_SMALL if shape[-1] * shape[-2] <= SMALL_PIXELS else AUTO_CPU_LARGE


def open_probe(job: JobContext, directory: RunDirectory, selection: Selection, cost: StepCost) -> Probe | None:
    """The job's probe (None with probe.size=0), judged by its pretrained model on first use; its
    images kept in the weights' memory layout (no reorder at each forward pass). With
    probe.size=auto, each example is judged on the prefix of the set that `cost` and probe.budget
    allow (see Probe)."""
    settings, examples, device = job.settings, job.source.examples, job.device
    size = probe_size(settings.probe, device, job.input_size)
    if size == 0:
        return None
    budget = settings.probe.budget if settings.probe.size == AUTO else None
    table = directory.probe_set()
    if table is None:
        if budget is None:  # every example judged on every image, in rank order
            chosen = rank_order(draw_probe(examples, selection.examples, size, settings.seed))
        else:  # each example judged on a prefix: in the order drawn, so that any prefix is a random sample
            chosen = draw_probe(examples, selection.examples, min(size, len(examples) - len(selection.examples)),
                                settings.seed)
    else:
        chosen = table_examples(table)
    view = example_view(job.model, random_view=False, seed=settings.seed)
    decoded = [(example, read_view(view, example)) for example in chosen]
    readable = [(example, x) for example, x in decoded if x is not None]
    if not readable:
        raise UserError(f"probe: none of its {len(decoded)} images can be read (e.g. {decoded[0][0].path}); "
                        f"probe.size=0 runs without a probe")
    if len(readable) < len(decoded):
        log.warning("probe: %d of %d images cannot be read and are left out", len(decoded) - len(readable),
                    len(decoded))
    x = torch.stack([x for _, x in readable]).to(device, memory_format=torch_format(job.layout))
    y = torch.tensor([example.label for example, _ in readable], device=device)
    if table is None:
        probe = Probe.at_pretrained(job.model, x, y, budget, cost)
        directory.save_probe_set(examples_table([e for e, _ in readable],
                                                right_before=probe.right_before.cpu().numpy(),
                                                loss_before=probe.loss_before.cpu().numpy()))
    else:
        kept = table[table["path"].isin({e.path for e, _ in readable})]
        probe = Probe(x, y, torch.tensor(kept["right_before"].to_numpy(dtype=bool), device=device),
                      torch.tensor(kept["loss_before"].to_numpy(), dtype=torch.float32, device=device),  # as judged
                      budget, cost)
    log.info("probe: %d validation images (none trained on); error %.1f%% and mean loss %.3f at the pretrained "
             "weights", len(probe), 100 * probe.error_before, probe.mean_loss_before)
    return probe
