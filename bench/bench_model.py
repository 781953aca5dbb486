"""Time and memory of the whole network against the number of views, and against this machine's matmul peaks.

    python bench/bench_model.py                    # `small` at 8/16/32/64 views of 256x256, hybrid vs transformer-only
    python bench/bench_model.py --paper-256        # + `paper`, 32 views 256x256, forward, fp32 vs bf16, FLOP/s
    python bench/bench_model.py --views --paper-960 --precision bf16   # only `paper`, 32 views 960x544 inference
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

--precision lists the precisions each case runs in (default fp32 and bf16, side by side): bf16 is
the network after `LongLRM.set_precision(torch.bfloat16)`, as inference runs it where the CPU has
native bf16 matmuls. The `paper` cases report FLOP/s against the float32 and bfloat16 matmul peaks
measured in the same process (best of 2048^3 and 4096^3 products).

Cases run with freed memory kept for reuse (model.cpu_allocator, as infer.py, evaluate.py and
training do); --default-malloc runs them with glibc's defaults instead, under which large tensors
are page-faulted in anew on every use and time grows faster than the token count.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import native_kernels, ssd  # noqa: E402
from model.build import build_model  # noqa: E402
from model.cameras import Cameras  # noqa: E402
from model.config import preset  # noqa: E402
from model.cpu_allocator import keep_freed_memory  # noqa: E402
from model.cpu_features import native_bf16_matmul  # noqa: E402


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


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, clock, sizes: tuple[int, ...] = (2048, 4096), repeats: int = 3) -> float:
    """FLOP/s of the best square matmul of these sizes in `dtype` (float32 accumulation for bf16)."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        a @ b
        best = max(best, 2 * size**3 / min(_timed(lambda: a @ b, clock) for _ in range(repeats)))
    return best


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


def block_lengths(config, views: int, height: int, width: int):
    """(kind, width, sequence length) of every block."""
    tokens = views * (height // config.patch_size) * (width // config.patch_size)
    for i, (kind, width_i) in enumerate(zip(config.blocks, config.widths)):
        merged = config.merge_before is not None and i >= config.merge_before
        yield kind, width_i, config.num_global_tokens + (tokens // 4 if merged else tokens)


def attention_flops(config, views: int, height: int, width: int) -> int:
    """QK^T and AV of every transformer block: 4 L^2 D for a sequence of L tokens of width D
    (FlopCounterMode sees inside neither CPU scaled_dot_product_attention nor the native kernel)."""
    return sum(4 * length**2 * w for kind, w, length in block_lengths(config, views, height, width) if kind == "t")


def native_scan_flops(mamba, width: int, length: int, dtype: torch.dtype) -> int:
    """FLOPs of one bidirectional Mamba2 block's two scans over `length` tokens where the native CPU
    scan runs them (FlopCounterMode cannot see inside it; 0 where the PyTorch chunked scan runs, whose
    matmuls it counts): the chunked algorithm's useful work, as bench_ssd.py counts it (per token 2QN
    per group for C.B, 2QP per head for the intra-chunk mixing, 4PN per head for the chunk states and
    their readout, Q the chunk), which is exactly what it counts of the PyTorch scan."""
    if native_kernels._library() is None or ssd.native_scan_blocker(dtype, mamba.d_state, mamba.cpu_chunk_size):
        return 0
    heads = mamba.expand * width // mamba.headdim
    q, n, p, g = mamba.cpu_chunk_size, mamba.d_state, mamba.headdim, mamba.ngroups
    return 2 * length * (2 * q * n * g + heads * (2 * q * p + 4 * p * n))


def count_flops(model, config, step, views: int, height: int, width: int, dtype: torch.dtype) -> dict[str, int]:
    """FLOPs of one step per component, by FlopCounterMode's module breakdown plus attention and the
    native scan."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = {"mamba": sum(native_scan_flops(config.mamba, w, length, dtype)
                          for kind, w, length in block_lengths(config, views, height, width) if kind == "m"),
             "transformer": attention_flops(config, views, height, width), "io": 0}
    for name, ops in counter.get_flop_counts().items():
        part = component_of(config, name.removeprefix("LongLRM."))
        if part is not None:
            flops[part] += sum(ops.values())
    return flops


def _timed(fn, clock) -> float:
    start = clock()
    fn()
    return clock() - start


def component_timer(model, config, clock) -> dict[str, float]:
    """Forward hooks adding each top-level module's wall time to its component (forward only)."""
    seconds = {"mamba": 0.0, "transformer": 0.0, "io": 0.0}
    for name, module in model.named_modules():
        part = component_of(config, name)
        if part is not None:
            module.register_forward_pre_hook(lambda m, a: setattr(m, "_tic", clock()))
            module.register_forward_hook(lambda m, a, o, part=part: seconds.__setitem__(
                part, seconds[part] + clock() - m._tic))
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
    model = build_model(config).set_precision(PRECISIONS[args.precision])
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
    flops = count_flops(model, config, step, args.case_views, args.height, args.width,
                        PRECISIONS[args.precision]) if args.count_flops else None
    clock = time.process_time if args.cpu_time else time.perf_counter
    seconds = component_timer(model, config, clock)
    best, parts = float("inf"), {}
    for _ in range(1 + args.repeats):
        seconds.update(dict.fromkeys(seconds, 0.0))
        t = _timed(step, clock)
        if t < best:
            best, parts = t, dict(seconds)
    peaks = {name: matmul_peak(dtype, clock) for name, dtype in PRECISIONS.items()} if args.count_flops else None
    return {"time": best, "parts": parts, "flops": flops, "matmul_peaks": peaks,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "setup_rss_gb": base_rss / 2**20}


def spawn(preset_name: str, pattern: str, views: int, height: int, width: int, mode: str, repeats: int,
          precision: str, args: argparse.Namespace, count_flops: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--case", "--preset", preset_name, "--pattern", pattern,
           "--case-views", str(views), "--height", str(height), "--width", str(width), "--mode", mode,
           "--repeats", str(repeats), "--precision", precision] + (["--count-flops"] if count_flops else []) \
        + (["--default-malloc"] if args.default_malloc else []) + (["--cpu-time"] if args.cpu_time else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_paper_256(r: dict, precision: str) -> None:
    """FLOP rates of one `paper` 256x256 run against both matmul peaks of its own process."""
    peaks = r["matmul_peaks"]
    total = sum(r["flops"].values())

    def rate(flops: float, seconds: float) -> str:
        return (f"{flops / seconds / 1e9:6.1f} GFLOP/s = {100 * flops / seconds / peaks[precision]:3.0f}% of the "
                f"{precision} matmul peak, {100 * flops / seconds / peaks['fp32']:3.0f}% of the fp32 one")

    print(f"  {precision}: time {r['time']:.1f} s, peak memory {r['peak_rss_gb']:.1f} GB, {total / 1e12:.2f} TFLOP "
          f"(matmuls, convolutions, attention): {rate(total, r['time'])}; matmul peaks measured in the same "
          f"process: fp32 {peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    for part in PARTS:
        seconds, flops = r["parts"][part], r["flops"][part]
        print(f"    {PARTS[part]:<40} {seconds:6.1f} s {flops / 1e12:6.2f} TFLOP {rate(flops, seconds)}")
    seconds, flops = (sum(r[key][part] for part in ("mamba", "transformer")) for key in ("parts", "flops"))
    print(f"    {'all blocks (Mamba2 and transformer)':<40} {seconds:6.1f} s {flops / 1e12:6.2f} TFLOP "
          f"{rate(flops, seconds)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, nargs="*", default=[8, 16, 32, 64], help="view counts for `small` (none: skip)")
    parser.add_argument("--backward", action="store_true", help="also time forward+backward (training mode)")
    parser.add_argument("--no-transformer-only", action="store_true", help="skip the transformer-only comparison")
    parser.add_argument("--paper-256", action="store_true", help="paper preset, 32 views 256x256, forward")
    parser.add_argument("--paper-960", action="store_true", help="paper preset, 32 views 960x544, inference")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS),
                        help="precisions every case runs in, side by side (default: both)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs after the first (the first pages memory in); the best run is reported")
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh processes per `small` and `paper` 256x256 case, taken in turn across cases; "
                             "the best is reported")
    parser.add_argument("--default-malloc", action="store_true", help="glibc's default allocator settings (see above)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the process's CPU seconds, not wall seconds: with OMP_NUM_THREADS=1 on a shared "
                             "machine this leaves out the time other processes held the core")
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
        args.precision = args.precision[0]
        print(json.dumps(run_case(args)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {'CPU' if args.cpu_time else 'wall'} "
          f"times, of `small` the best of {1 + args.repeats} runs in each of {args.rounds} process(es) per case; "
          f"{'default glibc allocator' if args.default_malloc else 'freed memory kept for reuse'}; "
          f"native bf16 matmuls: {'yes' if native_bf16_matmul()[0] else 'no'} ({native_bf16_matmul()[1]}); "
          f"load average {os.getloadavg()[0]:.1f} at start")
    patterns = {"hybrid": "hybrid"}  # column -> --pattern of its cases
    if args.variant_blocks:
        try:
            replace(preset("small"), blocks=args.variant_blocks)
        except ValueError as e:
            parser.error(f"--variant-blocks: {e}")
        patterns["variant"] = args.variant_blocks
    if not args.no_transformer_only:
        patterns["transformer"] = "transformer"
    columns = [(p, precision) for p in patterns for precision in args.precision]
    modes = ["infer"] + (["train"] if args.backward else [])
    small = preset("small")
    print(f"`small`: blocks {small.blocks!r}, merge before {small.merge_before}, "
          f"widths {small.dim}->{small.merged_dim}; transformer-only: blocks {'t' * len(small.blocks)!r}, same widths"
          + (f"; variant: blocks {args.variant_blocks!r}, same widths" if args.variant_blocks else ""))
    for mode in modes if args.views else []:
        label = "forward (inference_mode)" if mode == "infer" else "forward+backward (train, checkpointing)"
        print(f"\n`small` at 256x256, {label}")
        print(f"{'views':>6} | " + " | ".join(f"{f'{p} {precision} s':>18}{'peak GB':>9}" for p, precision in columns))
        results = {column: {} for column in columns}
        for _ in range(args.rounds):  # rounds cycle through all cases, so a slow spell hits them all
            for v in args.views:
                for column in columns:
                    p, precision = column
                    r = spawn("small", patterns[p], v, 256, 256, mode, args.repeats, precision, args)
                    best = results[column].get(v)
                    if best is None or "error" in best or r.get("time", float("inf")) < best["time"]:
                        results[column][v] = r
        for v in args.views:
            cells = [f"{r['time']:>18.2f}{r['peak_rss_gb']:>9.2f}" if "error" not in r else f"{'failed':>27}"
                     for r in (results[column][v] for column in columns)]
            print(f"{v:>6} | " + " | ".join(cells))
        for column in columns:
            r = results[column]
            if 32 in r and 64 in r and "error" not in r[32] and "error" not in r[64]:
                parts = "" if mode != "infer" else ", by component (forward hooks): " + ", ".join(
                    f"{part} {r[32]['parts'][part]:.2f} -> {r[64]['parts'][part]:.2f} s "
                    f"(x{r[64]['parts'][part] / r[32]['parts'][part]:.2f})"
                    for part in PARTS if r[32]["parts"].get(part))
                print(f"  {' '.join(column)}: t64/t32 = {r[64]['time'] / r[32]['time']:.2f}{parts}")

    if args.paper_256:
        print(f"\n`paper`, 32 views 256x256, forward (inference_mode), the best of {args.rounds} process(es) per "
              "precision (precisions in turn), each one run timed after its FLOP-counting run")
        runs = {}
        for _ in range(args.rounds):  # precisions in turn, so a slow spell hits both
            for precision in args.precision:
                r = spawn("paper", "hybrid", 32, 256, 256, "infer", 0, precision, args, count_flops=True)
                best = runs.get(precision)
                if best is None or "error" in best or r.get("time", float("inf")) < best["time"]:
                    runs[precision] = r
        for precision, r in runs.items():
            if "error" in r:
                print(f"  {precision}: failed: {r['error']}")
            else:
                print_paper_256(r, precision)
        if all(p in runs and "error" not in runs[p] for p in PRECISIONS):
            t32, t16 = runs["fp32"], runs["bf16"]
            print(f"  bf16 is {t32['time'] / t16['time']:.2f}x faster than fp32 (" + ", ".join(
                f"{part} {t32['parts'][part] / t16['parts'][part]:.2f}x" for part in PARTS) + ")")
    if args.paper_960:
        print("\n`paper`, 32 views 960x544, inference (inference_mode, head decoded 8 views at a time), "
              "single cold run per precision")
        for precision in args.precision:
            r = spawn("paper", "hybrid", 32, 544, 960, "infer", 0, precision, args)
            print(f"  {precision}: failed: {r['error']}" if "error" in r else
                  f"  {precision}: time {r['time']:.1f} s, peak memory {r['peak_rss_gb']:.1f} GB "
                  f"(setup {r['setup_rss_gb']:.1f} GB)")
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")
    print("reproduce: python bench/bench_model.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
