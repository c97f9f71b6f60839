"""The GPU check script, run on the CPU with small settings: every part of it but the GPU itself."""
import runpy
import sys

import pytest

from helpers.configs import ROOT, tiny_universe_overrides


@pytest.mark.slow  # three fresh processes; CI runs it after the default suite (.ci/run)
def test_the_gpu_check_runs_its_cpu_side_and_prints_one_table(cache_dir, capsys, monkeypatch):
    run = [*tiny_universe_overrides(cache_dir), "sample_size=3", "max_steps=10", "lr=3e-5", "probe.size=10"]
    script = ROOT / "benchmarks" / "gpu_check.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--device", "cpu", "--models", "test_resnet@32", "--methods",
                                      "original", "batched:2@exact", "batched:2", "--examples", "2", "--max-steps", "1",
                                      "--run", *run])
    with pytest.raises(SystemExit) as done:  # in this process; its benchmark and runs start their own
        runpy.run_path(str(script), run_name="__main__")
    output = capsys.readouterr().out
    assert done.value.code == 0, output[-3000:]
    table = [line for line in output.splitlines() if line.startswith("|")]
    progress = [line for line in output.splitlines() if line.startswith(("versions: ", "tests: ", "speed: ", "run: "))]
    assert len(progress) == 7, output[-3000:]  # each row printed as it came, before the table
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [row[0] for row in rows] == ["versions", "tests", "speed", "speed", "speed", "run", "run"], table
    assert [row[2] for row in rows] == ["info", "not run"] + ["pass"] * 5, table
    import torch
    assert f"torch {torch.__version__}" in rows[0][3] and "timm " in rows[0][3] and "hydra-core " in rows[0][3]
    assert "original loop" in rows[2][1] and "batched K=2, kernels exact" in rows[3][1]
    assert "example-steps/s" in rows[3][3] and "steps equal; kernels: exact" in rows[3][3]
    assert "batched K=2, kernels auto" in rows[4][1] and "kernels: auto (3x3 conv: " in rows[4][3]
    assert "status equal 100%, steps equal 100.0%" in rows[5][3]  # the same run on the same CPU
    assert "probe set 10 images" in rows[6][3] and "corrections" in rows[6][3]  # the compared run's phases
