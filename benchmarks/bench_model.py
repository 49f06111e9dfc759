"""Size, cost and speed of the MOGeo network family.

Prints tables of:

* parameters and forward FLOPs (``torch.utils.flop_counter``, counted on the meta device, one
  photo) of the paper configuration, the light one, and the DetGeo baseline;
* CPU forward latency (median after a warm-up) for m = 1 and m = 8 clicks;
* one forward for 8 clicks vs 8 single-click forwards (each recomputing both backbones, as a
  single-target model does): the paper's efficiency claim;
* CPU training throughput of the light configuration (forward + backward + Adam step, batch 8,
  2.5 clicks per photo on average);
* with ``--device cuda``: inference throughput (photos/s, bf16 autocast + channels_last) at
  batch 1 and a large batch, and training throughput;
* with ``--query-grid`` instead of the latency and training tables: the light configuration
  (query stride 32, 128 px) against ``light16`` (stride 16, 320 px letterboxed query) in one
  process: fp16 checkpoint size, one forward pass with 5 clicks, and the default inference
  (``TorchPredictor`` with the default test-time augmentation, what localization runs per
  reference window) with 5 clicks; runs alternate between the two so that load from other
  processes hits both alike, and the ratio is the median of the paired ratios.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_model.py            # CPU, ~3 min on 2 cores
    OMP_NUM_THREADS=2 python benchmarks/bench_model.py --query-grid  # stride 16 vs 32
    python benchmarks/bench_model.py --device cuda                 # GPU figures
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from geomogeo.engine.checkpoint import save_checkpoint
from geomogeo.nn.config import ModelConfig
from geomogeo.nn.losses import mogeo_loss
from geomogeo.nn.model import MOGeoNet, build_model
from geomogeo.nn.predictor import TorchPredictor

CLICKS_25 = [2, 3, 2, 3, 2, 3, 2, 3]  # batch 8, 2.5 clicks per photo


def configs() -> dict[str, ModelConfig]:
    return {
        "paper": ModelConfig(),
        "light": ModelConfig.light(),
        "light16": ModelConfig.light16(),
        "detgeo": ModelConfig(name="detgeo", variant="detgeo", click_encoding="square",
                              fusion="multiply"),
        "detgeo-light": ModelConfig.light(name="detgeo-light", variant="detgeo",
                                          click_encoding="square", fusion="multiply"),
    }


def make_inputs(
    cfg: ModelConfig, counts: list[int], device: torch.device | str = "cpu",
    channels_last: bool = False, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, r = len(counts), cfg.reference_size
    qh, qw = cfg.query_size
    ref = torch.randn(b, 3, r, r, generator=g)
    query = torch.randn(b, 3, qh, qw, generator=g)
    bidx = torch.repeat_interleave(torch.arange(b), torch.tensor(counts))
    clicks = torch.rand(len(bidx), 2, generator=g) * torch.tensor([qw, qh])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (ref.to(device, memory_format=fmt), query.to(device, memory_format=fmt),
            clicks.to(device), bidx.to(device))


def count(cfg: ModelConfig, m: int) -> tuple[int, int]:
    """(parameters, forward FLOPs for one photo with m clicks), on the meta device."""
    with torch.device("meta"):
        model = build_model(cfg).eval()
    n = sum(p.numel() for p in model.parameters())
    inputs = make_inputs(cfg, [m], device="meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(*inputs)
    return n, fc.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def bench_counts() -> None:
    rows = []
    for name, cfg in configs().items():
        n, f1 = count(cfg, 1)
        _, f8 = count(cfg, 8)
        rows.append([name, f"{cfg.reference_size}", f"{cfg.query_size[0]}x{cfg.query_size[1]}",
                     f"{cfg.width:g}", f"{n / 1e6:.2f}", f"{f1 / 1e9:.1f}", f"{f8 / 1e9:.1f}"])
    table("Parameters and forward FLOPs (one photo)",
          ["config", "ref px", "query px", "width", "params (M)", "GFLOP m=1", "GFLOP m=8"], rows)


def forward_fn(
    model: MOGeoNet, inputs: tuple[torch.Tensor, ...], amp: bool = False
) -> Callable[[], None]:
    """One inference forward pass (bf16 autocast on the inputs' device when ``amp``)."""
    device_type = inputs[0].device.type

    def fwd() -> None:
        ctx: AbstractContextManager[object] = (
            torch.autocast(device_type, dtype=torch.bfloat16) if amp else nullcontext()
        )
        with torch.inference_mode(), ctx:
            model(*inputs)

    return fwd


def singles_fn(model: MOGeoNet, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    """The clicks of photo 0 one at a time, each pass recomputing both backbones."""
    ref, query, clicks, _ = inputs
    zero = torch.zeros(1, dtype=torch.long, device=clicks.device)

    def run() -> None:
        with torch.inference_mode():
            for k in range(len(clicks)):
                model(ref[:1], query[:1], clicks[k:k + 1], zero)

    return run


def bench_cpu_latency(names: list[str], repeats: dict[str, int]) -> None:
    cfgs = configs()
    rows = []
    for name in names:
        cfg = cfgs[name]
        model = build_model(cfg).eval()
        r = repeats[name]
        cpu = torch.device("cpu")
        t1 = median_time(forward_fn(model, make_inputs(cfg, [1])), r, 1, cpu)
        # m=8 in one pass and 8 single-click passes, timed in alternation so that load from
        # other processes hits both alike; the speed-up is the median of the paired ratios
        multi = forward_fn(model, make_inputs(cfg, [8]))
        singles = singles_fn(model, make_inputs(cfg, [8]))
        multi()
        pairs = [(median_time(multi, 1, 0, cpu), median_time(singles, 1, 0, cpu))
                 for _ in range(r)]
        t8 = statistics.median(p[0] for p in pairs)
        t_single = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(s / m for m, s in pairs)
        rows.append([name, str(r), f"{t1 * 1e3:.0f}", f"{t8 * 1e3:.0f}",
                     f"{t_single * 1e3:.0f}", f"{ratio:.2f}x"])
    table(f"CPU forward latency, {torch.get_num_threads()} threads (median, ms)",
          ["config", "repeats", "m=1", "m=8 (one pass)", "8 x m=1", "speed-up"], rows)


def train_step_fn(
    model: MOGeoNet, counts: list[int], device: torch.device, amp: bool, channels_last: bool
) -> Callable[[], None]:
    cfg = model.config
    ref, query, clicks, bidx = make_inputs(cfg, counts, device, channels_last)
    r = cfg.reference_size
    xy = torch.rand(len(bidx), 2, device=device) * r * 0.7
    boxes = torch.cat([xy, xy + r * 0.1 + torch.rand(len(bidx), 2, device=device) * r * 0.2], 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        ctx: AbstractContextManager[object] = (
            torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
        )
        with ctx:
            out = model(ref, query, clicks, bidx)
        loss = mogeo_loss(out, boxes, bidx, model.anchors, cfg.stride)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_cpu_training(steps: int) -> None:
    cfg = configs()["light"]
    model = build_model(cfg)
    step = train_step_fn(model, CLICKS_25, torch.device("cpu"), amp=False, channels_last=False)
    t = median_time(step, steps, 1, torch.device("cpu"))
    table("CPU training throughput (light, batch 8, 20 clicks, fp32, Adam)",
          ["config", "s/step", "photos/s", "clicks/s"],
          [["light", f"{t:.3f}", f"{8 / t:.1f}", f"{20 / t:.1f}"]])


def bench_gpu(names: list[str], large_batch: int, repeats: int) -> None:
    device = torch.device("cuda")
    cfgs = configs()
    rows = []
    for name in names:
        cfg = cfgs[name]
        model = build_model(cfg).to(device, memory_format=torch.channels_last).eval()
        for batch in (1, large_batch):
            counts = (CLICKS_25 * (batch // 8 + 1))[:batch]
            inputs = make_inputs(cfg, counts, device, channels_last=True)
            t = median_time(forward_fn(model, inputs, amp=True), repeats, 3, device)
            rows.append([name, "inference", str(batch), str(sum(counts)), f"{t * 1e3:.1f}",
                         f"{batch / t:.1f}"])
        step = train_step_fn(model, CLICKS_25, device, amp=True, channels_last=True)
        t = median_time(step, repeats, 3, device)
        rows.append([name, "train (Adam)", "8", "20", f"{t * 1e3:.1f}", f"{8 / t:.1f}"])
        del model
        torch.cuda.empty_cache()
    table(f"GPU ({torch.cuda.get_device_name()}), bf16 autocast + channels_last",
          ["config", "mode", "batch", "clicks", "ms/batch", "photos/s"], rows)


def bench_query_grid(repeats: int, clicks: int = 5) -> None:
    """light (query stride 32) vs light16 (stride 16): checkpoint size and CPU time, paired."""
    names = ["light", "light16"]
    cfgs = configs()
    models = {n: build_model(cfgs[n]).eval() for n in names}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, model in models.items():
            path = Path(tmp) / f"{n}.pt"
            save_checkpoint(path, model, dtype=torch.float16)  # as the shipped model is
            sizes[n] = path.stat().st_size
    rng = np.random.default_rng(0)
    fns: dict[str, dict[str, Callable[[], object]]] = {"forward": {}, "default inference": {}}
    for n, model in models.items():
        cfg = cfgs[n]
        fns["forward"][n] = forward_fn(model, make_inputs(cfg, [clicks]))
        pred = TorchPredictor(model, name=n, sha256="-")
        qh, qw = cfg.query_size
        ref = rng.random((cfg.reference_size, cfg.reference_size, 3), dtype=np.float32)
        qry = rng.random((qh, qw, 3), dtype=np.float32)
        pts = rng.random((clicks, 2)) * np.array([qw, qh])

        def infer(p: TorchPredictor = pred, a: np.ndarray = ref, b: np.ndarray = qry,
                  c: np.ndarray = pts) -> object:
            return p.predict(a, b, c)

        fns["default inference"][n] = infer
    cpu = torch.device("cpu")
    rows = []
    for what, by_name in fns.items():
        for fn in by_name.values():
            fn()  # warm-up
        runs = [{n: median_time(fn, 1, 0, cpu) for n, fn in by_name.items()}
                for _ in range(repeats)]
        med = {n: statistics.median(r[n] for r in runs) for n in names}
        ratio = statistics.median(r["light16"] / r["light"] for r in runs)
        rows.append([what, str(repeats), f"{med['light'] * 1e3:.0f}",
                     f"{med['light16'] * 1e3:.0f}", f"{ratio:.2f}x"])
    rows.append(["checkpoint, fp16 (MB)", "-", f"{sizes['light'] / 1e6:.2f}",
                 f"{sizes['light16'] / 1e6:.2f}", f"{sizes['light16'] / sizes['light']:.2f}x"])
    table(f"Query grid: light (stride 32, 128 px) vs light16 (stride 16, 320 px letterbox), "
          f"{clicks} clicks, {torch.get_num_threads()} threads (median, ms)",
          ["measure", "repeats", "light", "light16", "light16 / light"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs, light config (CPU)")
    ap.add_argument("--paper-repeats", type=int, default=3,
                    help="timed runs, paper config at 1024 px (CPU; slow)")
    ap.add_argument("--skip-paper", action="store_true", help="CPU: light config only")
    ap.add_argument("--train-steps", type=int, default=5, help="timed CPU training steps")
    ap.add_argument("--large-batch", type=int, default=32, help="GPU large batch (photos)")
    ap.add_argument("--query-grid", action="store_true",
                    help="CPU: compare the query grids (light vs light16) instead of the "
                    "latency and training tables")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench_counts()
    if args.query_grid:
        bench_query_grid(args.repeats)
        return
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device")
        torch.backends.cudnn.benchmark = True
        bench_gpu(["paper", "light", "light16", "detgeo"], args.large_batch, max(args.repeats, 10))
        return
    names = ["light"] if args.skip_paper else ["light", "paper"]
    bench_cpu_latency(names, {"light": args.repeats, "paper": args.paper_repeats})
    bench_cpu_training(args.train_steps)


if __name__ == "__main__":
    main()
