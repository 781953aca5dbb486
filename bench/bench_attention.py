"""The native CPU attention kernel (csrc/attention.cpp) against torch's scaled_dot_product_attention.

    python bench/bench_attention.py                        # the paper's two shapes and two small ones
    python bench/bench_attention.py --shapes 1x8194x16x64 --dtype bf16 --threads 1

Shapes are B x L x H x d. The paper model's transformer blocks: 1x32770x4x64 (32 views of 256x256
at patch 8, width 256, before the token merge; 2 extra tokens) and 1x8194x16x64 (after it, width 1024).
FLOPs: 4 L^2 d per batch and head (the two products). Both run as the model calls them, through
`model.transformer.attention` on the qkv projection's strided views, without gradients ("auto"
takes the kernel, "sdpa" forces torch). Each thread count is timed in interleaved rounds, best
round kept, so a busy machine slows both alike and the ratios stay meaningful; the bf16 and fp32
matmul peaks (2048^3) of the same rounds are printed for scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.transformer import attention  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def shape(text: str) -> tuple[int, int, int, int]:
    b, length, heads, d = (int(x) for x in text.split("x"))
    return b, length, heads, d


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=shape, nargs="+",
                        default=[shape(s) for s in ("1x32770x4x64", "1x8194x16x64", "1x4096x4x64", "1x1024x4x64")])
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    cases = {}  # name -> (FLOPs, function)
    for name in args.dtype:
        mm = [torch.randn(2048, 2048).to(DTYPES[name]) for _ in range(2)]
        cases[("matmul 2048^3", name)] = (2 * 2048**3, lambda mm=mm: mm[0] @ mm[1])
        for b, length, heads, d in args.shapes:
            qkv = torch.randn(b, length, 3 * heads * d).to(DTYPES[name])
            q, k, v = qkv.unflatten(-1, (3, heads, d)).unbind(2)  # [B, L, H, d] views, rows 3 H d apart
            flops = 4 * length**2 * d * b * heads
            for backend in ("auto", "sdpa"):
                cases[(f"{b}x{length}x{heads}x{d} {backend}", name)] = (
                    flops, lambda q=q, k=k, v=v, backend=backend: attention(q, k, v, backend))

    print(f"torch {torch.__version__}, best of {args.rounds} interleaved rounds; auto = native kernel, "
          "sdpa = torch scaled_dot_product_attention")
    with torch.no_grad():
        for threads in args.threads:
            torch.set_num_threads(threads)
            for _, fn in cases.values():  # warm-up (and the kernels' build)
                fn()
            best = dict.fromkeys(cases, float("inf"))
            for _ in range(args.rounds):
                for key, (_, fn) in cases.items():
                    best[key] = min(best[key], timed(fn))
            print(f"\n{threads} thread(s)")
            print(f"{'case':<26}{'dtype':>6}{'time s':>9}{'GFLOP/s':>9}{'% peak':>8}{'x sdpa':>8}")
            for (case, name), (flops, _) in cases.items():
                peak = cases[("matmul 2048^3", name)][0] / best[("matmul 2048^3", name)]
                rate = flops / best[(case, name)]
                ratio = ""
                if case.endswith(" auto"):
                    ratio = f"{best[(case.replace(' auto', ' sdpa'), name)] / best[(case, name)]:>8.2f}"
                print(f"{case:<26}{name:>6}{best[(case, name)]:>9.3f}{rate / 1e9:>9.1f}{100 * rate / peak:>8.1f}"
                      f"{ratio}")
    print("\n% peak: of the same dtype's 2048^3 matmul rate at the same thread count.")
    print("reproduce: python bench/bench_attention.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
