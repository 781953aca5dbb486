"""Time of single `paper` blocks at the widths and token counts of 32 views at 256x256, fp32 and bf16.

    python bench/bench_blocks.py                         # transformer and Mamba2 block, both widths, fp32 and bf16
    python bench/bench_blocks.py --kinds t --widths 1024 --precision bf16 --profile   # + torch.profiler table
    python bench/bench_blocks.py --kinds io --precision bf16 --profile   # tokenizer, merge and head

The `paper` network runs its blocks at width 256 on 32768 tokens (+2 global) before the token merge
and at width 1024 on 8192 (+2) after it. Each block is timed as inference runs it: random weights,
bf16 as `LongLRM.set_precision` converts them, float32 residual input, no autograd, freed memory kept
(model.cpu_allocator). "io" is the tokenizer, the merge and the Gaussian head on the same token
counts. FLOPs are torch's FlopCounterMode count (matmuls, convolutions) plus 4 L^2 D per attention
block and the native scan's chunk products, as bench/bench_model.py counts them, and the rates are
compared with the fp32 and bf16 matmul peaks measured in the same process. Every case is timed in
interleaved rounds (best kept), so a busy machine slows all of them alike; --cpu-time counts this
process's CPU seconds (both threads) instead of wall time, which other processes on a shared
machine inflate more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_model import PRECISIONS, make_inputs, matmul_peak, native_scan_flops  # noqa: E402
from model.build import build_model  # noqa: E402
from model.config import preset  # noqa: E402
from model.cpu_allocator import keep_freed_memory  # noqa: E402
from model.mamba2 import Mamba2Block  # noqa: E402
from model.transformer import TransformerBlock  # noqa: E402

VIEWS, SIZE = 32, 256


def tokens_at(width: int, config) -> int:
    """Tokens of the sequence a block of this width sees: before or after the 2x2 merge."""
    patch = config.patch_size * (2 if width == config.merged_dim else 1)
    return config.num_global_tokens + VIEWS * (SIZE // patch) ** 2


def block_case(kind: str, width: int, dtype: torch.dtype):
    """(name, step, FLOPs) of one block on its paper-sized input."""
    config = preset("paper")
    block = (Mamba2Block(width, config.mamba) if kind == "m" else
             TransformerBlock(width, config.attn_head_dim, config.mlp_ratio)).eval()
    for module in block.modules():  # as LongLRM.set_precision converts them
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)
    length = tokens_at(width, config)
    x = torch.randn(1, length, width)
    flops = count_flops(lambda: block(x)) + (4 * length**2 * width if kind == "t" else
                                             native_scan_flops(config.mamba, width, length, dtype))
    name = f"{'transformer' if kind == 't' else 'Mamba2'} block, width {width}, {length} tokens"
    return name, lambda: block(x), flops


def io_case(dtype: torch.dtype):
    """(name, step, FLOPs) of the tokenizer, the merge and the head of the paper network together."""
    model = build_model(preset("paper")).set_precision(dtype).eval()
    images, cameras = make_inputs(VIEWS, SIZE, SIZE)
    origins, dirs = cameras.rays()
    c, g = model.config, model.config.num_global_tokens
    h = w = SIZE // c.patch_size
    wide = torch.randn(1, tokens_at(c.merged_dim, c), c.merged_dim)

    def step():
        model.merge(model.tokenizer(images, origins, dirs), g, VIEWS, h, w)
        model.head(wide[:, g:], origins, dirs)

    return "tokenizer + merge + head", step, count_flops(step)


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", choices=["t", "m", "io"], default=["t", "m"],
                        help="t: transformer block, m: Mamba2 block, io: tokenizer + merge + head")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024], help="block widths (paper: 256, 1024)")
    parser.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU seconds of this process (summed over threads) instead of wall time, "
                             "which other processes on a shared machine inflate")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one run per case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    keep_freed_memory()
    torch.manual_seed(0)

    cases = []
    for precision in args.precision:
        dtype = PRECISIONS[precision]
        for kind in args.kinds:
            if kind == "io":
                cases.append((precision, *io_case(dtype)))
            else:
                cases.extend((precision, *block_case(kind, width, dtype)) for width in args.widths)
    clock = time.process_time if args.cpu_time else time.perf_counter
    peaks = {name: matmul_peak(dtype, clock) for name, dtype in PRECISIONS.items()}
    best = [float("inf")] * len(cases)
    with torch.inference_mode():
        for _ in range(args.rounds):
            for i, (_, _, step, _) in enumerate(cases):
                start = clock()
                step()
                best[i] = min(best[i], clock() - start)

    print(f"{args.threads} threads, {'CPU' if args.cpu_time else 'wall'} time; matmul peaks measured in this process: "
          f"fp32 {peaks['fp32'] / 1e9:.0f}, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"command: python {' '.join(sys.argv)}")
    for (precision, name, _, flops), seconds in zip(cases, best):
        rate = flops / seconds
        print(f"  {precision} {name:<45} {seconds * 1e3:8.1f} ms {flops / 1e9:8.1f} GFLOP {rate / 1e9:7.1f} GFLOP/s "
              f"= {100 * rate / peaks[precision]:3.0f}% of the {precision} peak")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for precision, name, step, _ in cases:
            with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            print(f"\n{precision} {name}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))


if __name__ == "__main__":
    main()
