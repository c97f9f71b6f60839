"""What the summary says of the arithmetic (operations that warned they are not deterministic), and
the process-wide garbage-collection setting."""
import warnings

import pytest

from sweep.process import freeze_imports
from sweep.training.hardware import nondeterministic_operations

# the text torch's alert gives under torch.use_deterministic_algorithms(True, warn_only=True)
ALERT = ("{} does not have a deterministic implementation, but you set 'torch.use_deterministic_algorithms(True, "
         "warn_only=True)'. You can file an issue at https://github.com/pytorch/pytorch/issues to help us prioritize")


def test_nondeterministic_operations_are_recorded_and_shown_once_each():
    with pytest.warns(UserWarning) as shown, nondeterministic_operations() as recorded:
        warnings.simplefilter("always")
        for operation in ("adaptive_avg_pool2d_backward_cuda", "scatter_add_cuda_kernel",
                          "adaptive_avg_pool2d_backward_cuda"):
            warnings.warn(ALERT.format(operation), UserWarning, stacklevel=1)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert recorded == ["adaptive_avg_pool2d_backward_cuda", "scatter_add_cuda_kernel"]
    assert [str(w.message)[:30] for w in shown] == [ALERT.format("adaptive_avg_pool2d_backward_cuda")[:30],
                                                    ALERT.format("scatter_add_cuda_kernel")[:30],
                                                    "an unrelated warning"]


def test_recording_ends_with_the_block():
    with nondeterministic_operations() as recorded:
        pass
    with pytest.warns(UserWarning):
        warnings.warn(ALERT.format("index_add_cuda_"), UserWarning, stacklevel=1)
    assert recorded == []


def test_imports_are_frozen_once_per_process():
    """A launcher process running job after job must not freeze a finished job's garbage."""
    import gc

    freeze_imports()
    frozen = gc.get_freeze_count()
    garbage = [[object()] for _ in range(1000)]  # objects a later job would leave behind
    freeze_imports()
    assert gc.get_freeze_count() <= frozen and garbage  # (frozen objects that die leave the count)


def test_a_claimed_gpu_is_released_when_its_job_ends(monkeypatch, tmp_path):
    """Two GPUs seen through torch.cuda's answers: jobs one after another (a sequential sweep) find GPU 0
    free again; jobs at the same time (a parallel launcher) claim one each."""
    import types

    import torch

    from sweep.config import Device
    from sweep.training import hardware
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(uuid=f"test-{tmp_path.name}-{i}"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    with hardware.claimed_device(Device.auto, 0) as first:
        with hardware.claimed_device(Device.auto, 0) as beside:
            assert (first.index, beside.index) == (0, 1)
    with hardware.claimed_device(Device.auto, 0) as after:
        assert after.index == 0
