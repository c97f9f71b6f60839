"""Benchmark: the original scripts' loop against our simple path, batched engine and worker
processes, on the same examples and the same model, prepared once in one process.

    python benchmarks/speed.py [--models demo:test_resnet resnet18@224 tf_efficientnet_lite0@224]
                                [--methods original simple batched:32 workers:2 ...] [--examples N]
                                [--max-steps 10] [--repeats 1] [--device cpu|cuda]

Methods: `original` (one example at a time, `load_state_dict` reset, a new default AdamW per
example, as the original scripts; `original-fp16` with their fp16 autocast and a fresh GradScaler per
example), `simple` (the simple path), `simple-bf16`, `simple-fp16` (train.precision=fp16_scaler), `compiled` (the
simple path on `torch.compile(model, mode="reduce-overhead")`: CUDA graphs on a GPU; its compile
time is reported apart), `simple-cl` (the simple path on a channels_last copy of the model and
input: oneDNN's convolutions, including its depthwise kernels, instead of the default ones; float
results differ from the simple path's), `batched:K`, `batched:auto` (K as `execution.parallel=auto` sizes
it from free GPU memory), `batched-bf16:K`, `batched-fp16:K` (or `:auto`), and on a CPU `workers:N` and
`workers-batched:N:K`. A batched method runs its convolutions as `execution.kernels=auto` does (each
shape on the formulation timed fastest, in its warm-up; the timed run reads the timings back as a
second run would) or, with a suffix, `batched:8@exact` (vmap's own: the engine before the kernel
choice), `@matmul`, `@channels_last`; the table's `kernels` column says what each layer class ran.
Every method gets one untimed warm-up on 2 examples first (CUDA context,
cuDNN autotuning, allocator, compilation); on a CPU each method then runs in a fresh fork of this
process, so that none inherits what another left behind.

Prints one table (with --repeats, each method's fastest run): example-steps (optimizer updates)
per second; the speed-up over the first method; achieved GFLOP/s (an update's FLOPs, counted as every
run's summary counts them: sweep/training/flops.py) and its fraction of this machine's matmul throughput in
the same precision (fp32 with TF32 off, as the tool computes, bf16 or fp16; measured in the same run);
peak memory (resident high-water mark on CPU plus what worker processes added; allocated on
CUDA); and whether every example took exactly the simple path's number of steps in the method's
precision (`equal`), or within the kernels' tolerance (at least 99% equal, none off by more than one).

`demo:<arch>` uses the embedded universe's pretrained model and its real mistakes at lr=1e-5 (so
examples finish at different steps; the engine and workers get them longest first, as in a run);
`<arch>@<px>` uses a randomly initialised ImageNet-size model on random images with the least
likely class as label, so every example runs max-steps updates. Without --examples, a workload
has enough examples to keep the largest K busy twice over.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sweep.process import prepare_process

prepare_process()  # as main.py, before the first computation: reproducible MKL results, cuBLAS workspace

import pandas as pd  # after prepare_process(), which must run first
import timm
import torch
import torch.nn.functional as F

from sweep.config import AUTO, Kernels, Precision, TrainConfig, UniverseConfig
from sweep.data.demo import open_demo
from sweep.data.image_files import load_image
from sweep.data.images import model_transform
from sweep.run.cache import cache_root
from sweep.run.selection import sample_mistakes
from sweep.tolerance import KERNELS
from sweep.training.engine import BatchedTrainer
from sweep.training.flops import count_step
from sweep.training.hardware import exact_arithmetic, synchronize
from sweep.training.kernel_choice import KernelChoice
from sweep.training.loop import SingleExampleTrainer
from sweep.training.planner import longest_first
from sweep.training.sizing import engine_size
from sweep.training.workers import rows_in_workers

FP32, BF16 = TrainConfig(), TrainConfig(precision=Precision.bf16)
FP16 = TrainConfig(precision=Precision.fp16_scaler)  # the original's arithmetic: fp16, a loss scaler per example
# the simple path a method's steps are checked against, by the method's precision
REFERENCE = {"fp32": "simple path", "bf16": "simple path bf16", "fp16": "simple path fp16_scaler"}


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5,
                  trials: int = 5) -> float:
    """Measured dense matmul throughput of this device in `dtype` on n x n matrices (default 8192 on a
    GPU, 2048 on a CPU), the best of `trials` (the roofline for the % column)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(trials + 1):  # the first is a warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e12)
    return best


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets the resident-set high-water mark (Linux)


def _resident_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field))) / 1024


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return _resident_mb("VmHWM")


def workload(spec: str, n_examples: int, device: torch.device):
    """(model, [(x, y)], lr, [initial loss] or None) for a model spec."""
    if spec.startswith("demo:"):
        demo = open_demo(UniverseConfig(), cache_root(None))
        model = demo.pretrained(spec[5:]).eval()
        transform = model_transform(model, training=False)
        view = lambda example: transform(load_image(example.path))
        chosen = sample_mistakes(model, demo.examples, view, n_examples)
        return model.to(device), [(view(e).to(device), e.label) for e, _ in chosen], 1e-5, [loss for _, loss in chosen]
    arch, size = spec.split("@")
    torch.manual_seed(0)
    model = timm.create_model(arch).to(device).eval()
    xs = torch.randn(n_examples, 3, int(size), int(size), device=device)
    with torch.no_grad():
        labels = model(xs).argmin(1).tolist()
    return model, list(zip(xs, labels, strict=True)), 1e-5, None


def step_flops(model, x) -> int:
    """FLOPs of one update of one example, as each run's summary counts them (sweep.training.flops)."""
    return count_step(model, tuple(x.shape)).update_flops


def original_loop(model, examples, lr, max_steps, costs, fp16: bool = False):
    """As the original scripts: load_state_dict reset, a new (default, non-fused) AdamW per example; with
    `fp16`, their fp16 autocast and a fresh GradScaler per example."""
    state = copy.deepcopy(model.state_dict())
    device_type = next(model.parameters()).device.type
    steps = []
    for x, y in examples:
        model.load_state_dict(state)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        scaler = torch.amp.GradScaler(device_type, enabled=fp16)
        target = torch.tensor([y], device=x.device)
        for t in range(max_steps + 1):
            with torch.autocast(device_type, dtype=torch.float16, enabled=fp16):
                logits = model(x[None])
                loss = F.cross_entropy(logits, target)
            if logits.argmax(1).item() == y or t == max_steps:
                break
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        steps.append(t)
    model.load_state_dict(state)
    return steps, 0.0


def simple(train: TrainConfig = FP32, compiled: bool = False, channels_last: bool = False):
    def run(model, examples, lr, max_steps, costs):
        """As `python main.py execution.workers=1 execution.parallel=1`."""
        order = range(len(examples))
        return [s for _, s in _simple_outcomes(model, examples, lr, max_steps, order, train, compiled,
                                               channels_last)], 0.0
    return run


def batched(k: int | str, train: TrainConfig = FP32, kernels: Kernels = Kernels.auto):
    def run(model, examples, lr, max_steps, costs):
        """As `python main.py execution.parallel=k execution.kernels=kernels`: fed longest first when
        initial losses are known."""
        if k == AUTO:
            return batched(auto_k(model, examples, lr, max_steps, train), train, kernels)(model, examples, lr,
                                                                                         max_steps, costs)
        outcomes = dict(_engine_outcomes(model, examples, lr, max_steps, _longest_first(examples, costs), k, train,
                                         kernels))
        return [outcomes[i] for i in range(len(examples))], 0.0
    return run


KERNEL_CACHE = Path(tempfile.mkdtemp(prefix="speed-kernels-"))  # this benchmark's timings, shared with its forks


def kernel_choice(engine: BatchedTrainer, size: tuple[int, ...], setting: Kernels) -> KernelChoice:
    """The engine's kernels for `setting`, put to use (timed once per benchmark run, then read back)."""
    return engine.choose_kernels(setting, size, KERNEL_CACHE, torch.get_num_threads())


def auto_k(model, examples, lr, max_steps, train: TrainConfig = FP32) -> int:
    """K as `execution.parallel=auto` sizes it on a GPU for this model and these examples."""
    engine = BatchedTrainer(model, train, lr, max_steps, parallel=2)
    k, obstacle = engine_size(engine, tuple(examples[0][0].shape), len(examples), examples[0][0].device)
    if obstacle:
        raise SystemExit(f"batched:auto: {obstacle}")
    print(f"batched:auto: K={k} for {len(examples)} examples", flush=True)
    AUTO_KS[id(model), train.precision] = k
    return k


AUTO_KS: dict[tuple, int] = {}  # the K that batched:auto chose, per model and precision


def workers(n: int, k: int = 1, kernels: Kernels = Kernels.auto):
    def run(model, examples, lr, max_steps, costs):
        """As `python main.py execution.workers=n execution.parallel=k`: n forked processes, one thread each.

        Besides the steps, returns the memory the workers added (each one's resident high-water
        mark above its resident size at the fork; pages shared with the parent are not counted twice).
        """
        def process(tasks, stopping):
            start = _resident_mb("VmRSS")
            outcomes = _simple_outcomes if k == 1 else functools.partial(_engine_outcomes, k=k, kernels=kernels)
            for i, steps in outcomes(model, examples, lr, max_steps, order=tasks):
                yield {"i": i, "steps": steps}
            yield {"added_mb": _resident_mb("VmHWM") - start}

        rows = list(rows_in_workers(process, _longest_first(examples, costs), n, 1, lambda: False))
        steps = {row["i"]: row["steps"] for row in rows if "i" in row}
        return [steps[i] for i in range(len(examples))], sum(row.get("added_mb", 0.0) for row in rows)
    return run


def timed(run, model, examples, lr, max_steps, costs, device):
    """(steps per example, seconds, peak MB) of one run of a method."""
    reset_peak_memory(device)
    synchronize(device)
    start = time.perf_counter()
    steps, workers_mb = run(model, examples, lr, max_steps, costs)
    synchronize(device)
    seconds = time.perf_counter() - start
    return steps, seconds, peak_memory_mb(device) + workers_mb


def isolated(threads: int, function, *args):
    """`function(*args)` at `threads` torch threads in a fresh fork of this process (one worker of
    `sweep.training.workers`), which shares the prepared model and examples and inherits no state left by
    other methods. This process itself must not have run multithreaded (OpenMP's thread pool does
    not survive a fork)."""
    process = lambda tasks, stopping: (function(*args) for _ in tasks)
    return next(rows_in_workers(process, [None], 1, threads, lambda: False))


def _longest_first(examples, costs) -> list[int]:
    return longest_first(list(range(len(examples))), lambda i: costs[i] if costs else None)


_COMPILED: dict[int, torch.nn.Module] = {}


def _simple_outcomes(model, examples, lr, max_steps, order, train: TrainConfig = FP32, compiled: bool = False,
                     channels_last: bool = False):
    """(example position, steps taken) by the simple path, leaving the model at its pretrained weights."""
    if compiled:  # one compiled module per model, kept across the warm-up and the timed run
        model = _COMPILED.setdefault(id(model), torch.compile(model, mode="reduce-overhead"))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=layout)
    trainer = SingleExampleTrainer(model, train, lr, max_steps)
    for i in order:
        yield i, trainer.fit(examples[i][0][None].contiguous(memory_format=layout), examples[i][1]).steps_taken
    trainer.reset()


def _engine_outcomes(model, examples, lr, max_steps, order, k, train: TrainConfig = FP32,
                     kernels: Kernels = Kernels.auto):
    """(example position, steps taken) by the batched engine with K = k, as each finishes."""
    engine = BatchedTrainer(model, train, lr, max_steps, parallel=k)
    kernel_choice(engine, tuple(examples[0][0].shape), kernels)
    for i, outcome in engine.run((i, *examples[i], None) for i in order):
        yield i, outcome.steps_taken


def method(spec: str, device: torch.device):
    """(label, function, precision) of a method spec: name[:K or :N:K][@kernels]."""
    spec, _, kernel_setting = spec.partition("@")
    name, *numbers = spec.split(":")
    if kernel_setting and (not name.startswith(("batched", "workers-batched")) or name == "batched-bf16"):
        raise SystemExit(f"{spec}@{kernel_setting}: only the fp32 and fp16 batched methods choose kernels")
    try:
        kernels = Kernels(kernel_setting or AUTO)
    except ValueError:
        raise SystemExit(f"{spec}@{kernel_setting}: expected kernels {', '.join(k.value for k in Kernels)}") from None
    suffix = f", kernels {kernels.value}"
    if numbers == [AUTO] and name in ("batched", "batched-fp16"):
        if device.type != "cuda":
            raise SystemExit(f"{spec} sizes K from free GPU memory: name K on a CPU ({name}:8)")
        return (("batched K=auto" + suffix, batched(AUTO, FP32, kernels), "fp32") if name == "batched" else
                ("batched fp16_scaler K=auto" + suffix, batched(AUTO, FP16, kernels), "fp16"))
    numbers = [int(n) for n in numbers]
    makers = {"original": ("original loop", lambda: original_loop, "fp32"),
              "simple": ("simple path", lambda: simple(), "fp32"),
              "original-fp16": ("original loop fp16", lambda: functools.partial(original_loop, fp16=True), "fp16"),
              "simple-bf16": ("simple path bf16", lambda: simple(BF16), "bf16"),
              "simple-fp16": ("simple path fp16_scaler", lambda: simple(FP16), "fp16"),
              "compiled": ("simple path, torch.compile reduce-overhead", lambda: simple(compiled=True), "fp32"),
              "simple-cl": ("simple path, channels_last", lambda: simple(channels_last=True), "fp32"),
              "batched": ("batched K={}" + suffix, lambda k: batched(k, FP32, kernels), "fp32"),
              "batched-bf16": ("batched bf16 K={}", lambda k: batched(k, BF16, Kernels.exact), "bf16"),
              "batched-fp16": ("batched fp16_scaler K={}" + suffix, lambda k: batched(k, FP16, kernels), "fp16"),
              "workers": ("{} workers", workers, "fp32"),
              "workers-batched": ("{} workers x batched K={}" + suffix,
                                  lambda n, k: workers(n, k, kernels), "fp32")}
    if name not in makers:
        raise SystemExit(f"unknown method {spec!r}: expected one of {', '.join(makers)} (with :K or :N:K)")
    if name.startswith("workers") and device.type == "cuda":
        raise SystemExit(f"{spec}: worker processes are forked CPU processes; a forked child cannot use CUDA")
    label, make, precision = makers[name]
    return label.format(*numbers), make(*numbers), precision


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo:test_resnet", "resnet18@224",
                                                        "tf_efficientnet_lite0@224"])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="default: original simple batched:8 batched:32 workers:2 on CPU; original simple "
                             "compiled simple-bf16 batched:8 batched:32 batched:128 batched-bf16:32 on CUDA")
    parser.add_argument("--examples", type=int, default=None,
                        help="examples per model (default: twice the largest K, at least 256 for demo:, 16 for @px)")
    parser.add_argument("--max-steps", type=int, default=10, help="cap for the @px workloads")
    parser.add_argument("--repeats", type=int, default=1, help="run every method this often, keep the fastest")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the table's rows to this JSON file")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="n of the n x n matmuls that measure the peak (default: 8192 on a GPU, 2048 on a CPU)")
    return parser.parse_args()


def measurer(device: torch.device, threads: int) -> Callable:
    """How a measurement runs: on a CPU in a fresh fork of this process at `threads` threads (methods
    run in one process disturb each other's timings; see benchmarks/README.md), this process
    preparing the workloads on one thread so that the forks are safe; on CUDA, which cannot be used
    in a forked child, in place, one after another, in fp32 as the tool runs it (no TF32)."""
    if device.type == "cpu":
        torch.set_num_threads(1)
        return functools.partial(isolated, threads)
    exact_arithmetic(device, Precision.fp32)
    return lambda function, *a: function(*a)


def measure_model(spec: str, methods: list, args: argparse.Namespace, measure: Callable, peaks: dict,
                  device: torch.device, largest_k: int) -> list[dict]:
    """The table's rows of the workload `spec`: each method warmed up, then timed `args.repeats` times
    (methods interleaved, so that a slow spell of the machine hits all of them), the fastest kept."""
    demo = spec.startswith("demo:")
    n = args.examples or max(256 if demo else 16, 2 * largest_k)
    model, examples, lr, costs = workload(spec, n, device)
    max_steps = 1000 if demo else args.max_steps
    flops = step_flops(model, examples[0][0])
    results, failed = {}, set()
    for _, label, run, _ in methods:  # warm-up: CUDA context, autotuning, allocator, compilation
        tick = time.perf_counter()
        try:
            measure(timed, run, model, examples[:2], lr, min(max_steps, 3), costs[:2] if costs else None, device)
        except Exception as error:  # one method failing must not lose the others' rows
            failed.add(label)
            print(f"{spec}: {label}: failed: {type(error).__name__}: {str(error).splitlines()[0]}", flush=True)
        if "compile" in label:
            print(f"{spec}: {label}: warm-up (compilation) {time.perf_counter() - tick:.1f} s", flush=True)
    for _ in range(args.repeats):
        for _, label, run, precision in methods:
            if label in failed:
                continue
            steps, seconds, memory = measure(timed, run, model, examples, lr, max_steps, costs, device)
            if label not in results or seconds < results[label][1]:
                results[label] = steps, seconds, memory, precision
            print(f"{spec}: {label}: {sum(steps)} updates in {seconds:.2f} s", flush=True)
    references = {}
    rows, baseline = [], None
    for label, (steps, seconds, memory, precision) in results.items():
        if precision not in references:  # the simple path's steps in this precision, measured or computed
            simple_label = REFERENCE[precision]
            references[precision] = results[simple_label][0] if simple_label in results else \
                measure(simple({"fp32": FP32, "bf16": BF16, "fp16": FP16}[precision]), model, examples, lr,
                        max_steps, costs)[0]
        reference = references[precision]
        rate = sum(steps) / seconds
        baseline = baseline or rate
        rows.append({"model": spec, "method": label, "examples": len(examples), "updates": sum(steps),
                     "seconds": round(seconds, 2), "example-steps/s": round(rate, 1),
                     "speedup": round(rate / baseline, 2), "GFLOP/step": round(flops / 1e9, 3),
                     "GFLOP/s": round(rate * flops / 1e9, 1),
                     "% of peak": round(100 * rate * flops / 1e12 / peaks[precision], 2),
                     "peak MB": round(memory), "precision": precision,
                     "steps vs simple path": steps_verdict(steps, reference),
                     "kernels": kernels_used(label, model, examples, device)})
    return rows


def steps_verdict(steps: list[int], reference: list[int]) -> str:
    """`equal`, `within tolerance` (the kernels': at least 99% equal, none off by more than one) or `DIFFER`."""
    if steps == reference:
        return "equal"
    gaps = [abs(a - b) for a, b in zip(steps, reference, strict=True)]
    equal = sum(g == 0 for g in gaps) / len(gaps)
    ok = KERNELS.steps_within(equal, max(gaps))
    return f"{'within tolerance' if ok else 'DIFFER'} ({equal:.1%} equal, largest gap {max(gaps)})"


def kernels_used(label: str, model, examples, device: torch.device) -> str:
    """What each convolution layer class ran in a batched method and, where timed, the milliseconds
    its layers take per step (read back from the method's timings)."""
    if "kernels " not in label:
        return ""
    setting = Kernels(label.rsplit("kernels ", 1)[1])
    train = FP16 if "fp16" in label else FP32
    found = re.search(r"K=(\d+)", label)
    k = int(found.group(1)) if found else AUTO_KS.get((id(model), train.precision))
    if k is None:
        return setting.value
    engine = BatchedTrainer(model, train, 1e-5, 1, parallel=k)
    choice = kernel_choice(engine, tuple(examples[0][0].shape), setting)
    ms = ", ".join(f"{kind} {value:g}" for kind, value in choice.ms_by_class().items())
    return choice.describe().removeprefix("kernels: ") + (f"; ms per step: {ms}" if ms else "")


def main() -> None:
    args = arguments()
    device = torch.device(args.device)
    specs = args.methods or (["original", "simple", "compiled", "simple-bf16", "batched:8", "batched:32",
                              "batched:128", "batched-bf16:32"] if device.type == "cuda"
                             else ["original", "simple", "batched:8", "batched:32", "workers:2"])
    methods = [(spec, *method(spec, device)) for spec in specs]
    batched = ("batched", "batched-bf16", "batched-fp16", "workers-batched")
    ks = [s.partition("@")[0].split(":") for s in specs]
    largest_k = max([int(parts[-1]) for parts in ks if parts[0] in batched and parts[-1] != AUTO] or [1])
    threads = torch.get_num_threads()
    measure = measurer(device, threads)
    peaks = {"fp32": measure(matmul_tflops, device, torch.float32, args.matmul_size)}
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if any(p == precision for *_, p in methods):
            peaks[precision] = measure(matmul_tflops, device, dtype, args.matmul_size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device={device} ({name}), threads={threads}, torch {torch.__version__}, matmul peak: "
          + ", ".join(f"{p} {v:.2f} TFLOP/s" for p, v in peaks.items()), flush=True)
    rows = []
    for spec in args.models:
        rows += measure_model(spec, methods, args, measure, peaks, device, largest_k)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
