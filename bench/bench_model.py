"""Time and memory of the whole network against the number of views, and against this machine's matmul peak.

    python bench/bench_model.py                    # `small` at 8/16/32/64 views of 256x256, hybrid vs transformer-only
    python bench/bench_model.py --paper-256        # + `paper`, 32 views 256x256, forward, GFLOP/s vs matmul peak
    python bench/bench_model.py --views --paper-960   # only `paper`, 32 views 960x544 inference (14 GB, 20 min here)
    python bench/bench_model.py --views 8 16 --backward   # also forward+backward (training mode)
    python bench/bench_model.py --views 32 64 --variant-blocks mmmmmmmmmmmmmmmmt   # + a deeper `small`

Each case runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own; the
figure includes the weights and inputs. Times are the best of the first and --repeats more runs,
and over --rounds such processes per case, which cycle through the cases (on a shared machine a
slow spell then hits every view count, not only the one running at the time). Forward hooks
split them into Mamba2 blocks, transformer blocks and the rest (tokenizer, merge, head), so the
scaling of each part shows. FLOPs: torch's FlopCounterMode in a run of its own
(matmuls, convolutions, per module) plus 4 L^2 D per attention block, which FlopCounterMode does
not count for CPU attention.

Cases run with freed memory kept for reuse (model.cpu_allocator, as infer.py, evaluate.py and
training do); --default-malloc runs them with glibc's defaults instead, under which large tensors
are page-faulted in anew on every use and time grows faster than the token count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.build import build_model  # noqa: E402
from model.cameras import Cameras  # noqa: E402
from model.config import preset  # noqa: E402
from model.cpu_allocator import keep_freed_memory  # noqa: E402


def make_inputs(views: int, height: int, width: int) -> tuple[torch.Tensor, Cameras]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, views, height, width, 3, generator=gen)
    angles = torch.linspace(0, 2 * torch.pi, views + 1)[:-1]
    c2w = torch.eye(4).repeat(1, views, 1, 1)  # cameras on a circle looking at the origin
    c2w[0, :, 0, 0], c2w[0, :, 0, 2] = torch.cos(angles), -torch.sin(angles)
    c2w[0, :, 2, 0], c2w[0, :, 2, 2] = torch.sin(angles), torch.cos(angles)
    c2w[0, :, :3, 3] = -2.0 * c2w[0, :, :3, 2]
    intr = torch.tensor([0.8 * width, 0.8 * width, width / 2, height / 2]).repeat(1, views, 1)
    return images, Cameras(intr, c2w, width, height)


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


PARTS = {"mamba": "Mamba2 blocks", "transformer": "transformer blocks (matmul-dominated)",
         "io": "tokenizer, merge and head"}


def component_of(config, name: str) -> str | None:
    """The component a module (named as in model.named_modules()) is counted in: "mamba" or
    "transformer" for blocks, "io" for the tokenizer, merge and head, None below the top level."""
    if name in ("tokenizer", "merge", "head"):
        return "io"
    parts = name.split(".")
    if len(parts) == 2 and parts[0] == "blocks":
        return "mamba" if config.blocks[int(parts[1])] == "m" else "transformer"
    return None


def attention_flops(config, views: int, height: int, width: int) -> int:
    """QK^T and AV of every transformer block: 4 L^2 D for a sequence of L tokens of width D
    (FlopCounterMode does not see inside CPU scaled_dot_product_attention)."""
    tokens = views * (height // config.patch_size) * (width // config.patch_size)
    total = 0
    for i, (kind, width_i) in enumerate(zip(config.blocks, config.widths)):
        merged = config.merge_before is not None and i >= config.merge_before
        length = config.num_global_tokens + (tokens // 4 if merged else tokens)
        total += 4 * length**2 * width_i if kind == "t" else 0
    return total


def count_flops(model, config, step, views: int, height: int, width: int) -> dict[str, int]:
    """FLOPs of one step per component, by FlopCounterMode's module breakdown plus attention."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = {"mamba": 0, "transformer": attention_flops(config, views, height, width), "io": 0}
    for name, ops in counter.get_flop_counts().items():
        part = component_of(config, name.removeprefix("LongLRM."))
        if part is not None:
            flops[part] += sum(ops.values())
    return flops


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def component_timer(model, config) -> dict[str, float]:
    """Forward hooks adding each top-level module's wall time to its component (forward only)."""
    seconds = {"mamba": 0.0, "transformer": 0.0, "io": 0.0}
    for name, module in model.named_modules():
        part = component_of(config, name)
        if part is not None:
            module.register_forward_pre_hook(lambda m, a: setattr(m, "_tic", time.perf_counter()))
            module.register_forward_hook(lambda m, a, o, part=part: seconds.__setitem__(
                part, seconds[part] + time.perf_counter() - m._tic))
    return seconds


def run_case(args: argparse.Namespace) -> dict:
    """One configuration in this process: returns times (whole and per component), FLOPs per
    component and peak memory as a dict. FLOPs are counted in a run of their own (the counter slows
    the run it watches), then the timed runs follow."""
    torch.set_flush_denormal(True)
    if not args.default_malloc:
        keep_freed_memory()
    torch.manual_seed(0)
    config = preset(args.preset)
    if args.pattern == "transformer":
        config.blocks = "t" * len(config.blocks)
    elif args.pattern != "hybrid":  # an explicit block string, for experiments
        config.blocks = args.pattern
    config.checkpointing = args.mode == "train"
    model = build_model(config)
    images, cameras = make_inputs(args.case_views, args.height, args.width)

    if args.mode == "infer":
        model.eval()

        def step():
            with torch.inference_mode():
                model(images, cameras)
    else:
        model.train()

        def step():
            out = model(images, cameras)
            g = out.gaussians
            (g.means.mean() + g.sh.mean() + g.log_scales.mean() + g.opacity_logits.mean()).backward()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flops = count_flops(model, config, step, args.case_views, args.height, args.width) if args.count_flops else None
    seconds = component_timer(model, config)
    best, parts = float("inf"), {}
    for _ in range(1 + args.repeats):
        seconds.update(dict.fromkeys(seconds, 0.0))
        t = _timed(step)
        if t < best:
            best, parts = t, dict(seconds)
    peak = matmul_peak() if args.count_flops else None
    return {"time": best, "parts": parts, "flops": flops, "matmul_peak": peak,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "setup_rss_gb": base_rss / 2**20}


def spawn(preset_name: str, pattern: str, views: int, height: int, width: int, mode: str, repeats: int,
          count_flops: bool = False, default_malloc: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--case", "--preset", preset_name, "--pattern", pattern,
           "--case-views", str(views), "--height", str(height), "--width", str(width), "--mode", mode,
           "--repeats", str(repeats)] + (["--count-flops"] if count_flops else []) \
        + (["--default-malloc"] if default_malloc else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="*", default=[8, 16, 32, 64], help="view counts for `small` (none: skip)")
    parser.add_argument("--backward", action="store_true", help="also time forward+backward (training mode)")
    parser.add_argument("--no-transformer-only", action="store_true", help="skip the transformer-only comparison")
    parser.add_argument("--paper-256", action="store_true", help="paper preset, 32 views 256x256, forward")
    parser.add_argument("--paper-960", action="store_true", help="paper preset, 32 views 960x544, inference")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs after the first (the first pages memory in); the best run is reported")
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh processes per `small` case, taken in turn across cases; the best is reported")
    parser.add_argument("--default-malloc", action="store_true", help="glibc's default allocator settings (see above)")
    parser.add_argument("--variant-blocks", help="also time `small` with this block string (e.g. 16 m's and a t)")
    # internal: run one case in this process
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    parser.add_argument("--pattern", default="hybrid", help=argparse.SUPPRESS)
    parser.add_argument("--case-views", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="infer", help=argparse.SUPPRESS)
    parser.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times are the best of {1 + args.repeats} "
          f"runs in each of {args.rounds} process(es) per case; "
          f"{'default glibc allocator' if args.default_malloc else 'freed memory kept for reuse'}")
    patterns = {"hybrid": "hybrid"}  # column -> --pattern of its cases
    if args.variant_blocks:
        try:
            replace(preset("small"), blocks=args.variant_blocks)
        except ValueError as e:
            parser.error(f"--variant-blocks: {e}")
        patterns["variant"] = args.variant_blocks
    if not args.no_transformer_only:
        patterns["transformer"] = "transformer"
    modes = ["infer"] + (["train"] if args.backward else [])
    small = preset("small")
    print(f"`small`: blocks {small.blocks!r}, merge before {small.merge_before}, "
          f"widths {small.dim}->{small.merged_dim}; transformer-only: blocks {'t' * len(small.blocks)!r}, same widths"
          + (f"; variant: blocks {args.variant_blocks!r}, same widths" if args.variant_blocks else ""))
    for mode in modes if args.views else []:
        label = "forward (inference_mode)" if mode == "infer" else "forward+backward (train, checkpointing)"
        print(f"\n`small` at 256x256, {label}")
        print(f"{'views':>6} | " + " | ".join(f"{p + ' s':>16}{'peak GB':>9}" for p in patterns))
        results = {p: {} for p in patterns}
        for _ in range(args.rounds):  # rounds cycle through all cases, so a slow spell hits them all
            for v in args.views:
                for p in patterns:
                    r = spawn("small", patterns[p], v, 256, 256, mode, args.repeats, default_malloc=args.default_malloc)
                    best = results[p].get(v)
                    if best is None or "error" in best or r.get("time", float("inf")) < best["time"]:
                        results[p][v] = r
        for v in args.views:
            cells = [f"{r['time']:>16.2f}{r['peak_rss_gb']:>9.2f}" if "error" not in r else f"{'failed':>25}"
                     for r in (results[p][v] for p in patterns)]
            print(f"{v:>6} | " + " | ".join(cells))
        for p in patterns:
            r = results[p]
            if 32 in r and 64 in r and "error" not in r[32] and "error" not in r[64]:
                parts = "" if mode != "infer" else ", by component (forward hooks): " + ", ".join(
                    f"{part} {r[32]['parts'][part]:.2f} -> {r[64]['parts'][part]:.2f} s "
                    f"(x{r[64]['parts'][part] / r[32]['parts'][part]:.2f})"
                    for part in PARTS if r[32]["parts"].get(part))
                print(f"  {p}: t64/t32 = {r[64]['time'] / r[32]['time']:.2f}{parts}")

    if args.paper_256:
        r = spawn("paper", "hybrid", 32, 256, 256, "infer", 0, count_flops=True, default_malloc=args.default_malloc)
        print("\n`paper`, 32 views 256x256, forward (inference_mode), timed after the FLOP-counting run")
        if "error" in r:
            print("  failed:", r["error"])
        else:
            peak = r["matmul_peak"]
            total = sum(r["flops"].values())
            print(f"  time {r['time']:.1f} s, peak memory {r['peak_rss_gb']:.1f} GB, {total / 1e12:.2f} TFLOP "
                  f"(matmuls, convolutions, attention): {total / r['time'] / 1e9:.1f} GFLOP/s = "
                  f"{100 * total / r['time'] / peak:.0f}% of the fp32 matmul peak measured in the same process "
                  f"({peak / 1e9:.1f} GFLOP/s)")
            for part in PARTS:
                seconds, flops = r["parts"][part], r["flops"][part]
                print(f"  {PARTS[part]:<40} {seconds:6.1f} s {flops / 1e12:6.2f} TFLOP {flops / seconds / 1e9:6.1f} "
                      f"GFLOP/s = {100 * flops / seconds / peak:3.0f}% of peak")
    if args.paper_960:
        r = spawn("paper", "hybrid", 32, 544, 960, "infer", 0, default_malloc=args.default_malloc)
        print("\n`paper`, 32 views 960x544, inference (inference_mode, head decoded 8 views at a time), "
              "single cold run")
        print("  failed: " + r["error"] if "error" in r else
              f"  time {r['time']:.1f} s, peak memory {r['peak_rss_gb']:.1f} GB (setup {r['setup_rss_gb']:.1f} GB)")
    print("\nreproduce: python bench/bench_model.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
