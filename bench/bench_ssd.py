"""Throughput of the CPU SSD scan (`chunk_scan`) against this machine's own matmul peaks, fp32 and bf16.

    python bench/bench_ssd.py                       # paper sizes: 32 heads x 64, d_state 256, L = 16384
    python bench/bench_ssd.py --length 4096 --chunks 64 128 --backward --dtype fp32

FLOPs counted per token: 2QN*G (C.B products) + 2QHP (intra-chunk mixing) + 4HPN (chunk states and
their readout), Q the chunk size, i.e. the useful work of the chunked algorithm. A bf16 scan takes
x, B and C in bfloat16 (dt stays float32), as the network's bf16 path feeds it; its rate is compared
with the bf16 matmul peak. Forward runs take the native kernels (no gradients), forward+backward
the PyTorch twins. Every configuration and the matmul references are timed in interleaved rounds
and the best round is kept, so a busy machine slows all of them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.ssd import chunk_scan, chunk_scan_ref  # noqa: E402


def best_time(fn, rounds: list[float]) -> None:
    start = time.perf_counter()
    fn()
    rounds.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=256)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--chunks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref-length", type=int, default=256, help="length for the sequential recurrence")
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="input dtypes of the scan (default: both)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.set_flush_denormal(True)  # decayed states underflow; denormal arithmetic is 2-3x slower
    torch.manual_seed(0)
    L, H, P, N, G = args.length, args.heads, args.headdim, args.d_state, args.groups
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    x32 = torch.randn(1, L, H, P)
    dt = torch.randn(1, L, H) - 2.0
    A = -torch.empty(H).uniform_(1, 16)
    B32 = torch.randn(1, L, G, N)
    C32 = torch.randn(1, L, G, N)
    grad_y = torch.randn_like(x32)  # dense, as in training (y.sum() would give a stride-0 gradient)

    def flops(q: int) -> float:
        return L * (2 * q * N * G + 2 * q * H * P + 4 * H * P * N)

    def fwd(q: int, dtype: torch.dtype):
        x, B, C = (t.to(dtype) for t in (x32, B32, C32))
        return lambda: chunk_scan(x, dt, A, B, C, q, dt_softplus=True)

    def fwd_bwd(q: int, dtype: torch.dtype):
        def run():
            leaves = [t.to(dtype).requires_grad_() for t in (x32, dt, B32, C32)]
            y = chunk_scan(leaves[0], leaves[1], A, leaves[2], leaves[3], q, dt_softplus=True)
            y.backward(grad_y.to(dtype))
        return run

    lr = args.ref_length
    ref_in = (x32[:, :lr], dt[:, :lr], A, B32[:, :lr], C32[:, :lr])
    cases = {f"recurrence L={lr}": lambda: chunk_scan_ref(*ref_in, dt_softplus=True)}
    for name in args.dtype:
        mm = [torch.randn(2048, 2048).to(dtypes[name]) for _ in range(2)]
        cases[f"matmul 2048^3 {name}"] = lambda mm=mm: mm[0] @ mm[1]
        for q in args.chunks:
            cases[f"chunk_scan {name} Q={q}"] = fwd(q, dtypes[name])
            if args.backward:
                cases[f"chunk_scan {name} Q={q} fwd+bwd"] = fwd_bwd(q, dtypes[name])
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        fn()
    for _ in range(args.rounds):
        for name, fn in cases.items():
            best_time(fn, times[name])
    best = {name: min(ts) for name, ts in times.items()}

    ref_full = best[f"recurrence L={lr}"] * L / lr  # the recurrence is linear in L
    print(f"threads {torch.get_num_threads()}, L={L}, H={H}, P={P}, N={N}, G={G}")
    peaks = {name: 2 * 2048**3 / best[f"matmul 2048^3 {name}"] for name in args.dtype}
    print("matmul peaks (2048^3): " + ", ".join(f"{name} {peak / 1e9:.1f} GFLOP/s" for name, peak in peaks.items()))
    print(f"sequential recurrence (fp32): {best[f'recurrence L={lr}']:.3f} s at L={lr}, "
          f"extrapolated linearly to L={L}: {ref_full:.1f} s")
    print(f"{'case':<30}{'time s':>9}{'GFLOP/s':>10}{'% peak':>8}{'x recurrence':>14}")
    for name in args.dtype:
        for q in args.chunks:
            t = best[f"chunk_scan {name} Q={q}"]
            rate = flops(q) / t
            print(f"{f'chunk_scan {name} Q={q}':<30}{t:>9.3f}{rate / 1e9:>10.1f}{100 * rate / peaks[name]:>8.1f}"
                  f"{ref_full / t:>14.0f}")
            if args.backward:
                tb = best[f"chunk_scan {name} Q={q} fwd+bwd"]
                print(f"{f'  fwd+bwd {name} Q={q}':<30}{tb:>9.3f}{3 * flops(q) / tb / 1e9:>10.1f}"
                      f"{100 * 3 * flops(q) / tb / peaks[name]:>8.1f}")
    print("% peak: of the matmul peak of the scan's own dtype." + (" fwd+bwd rates count 3x the forward FLOPs."
                                                                  if args.backward else ""))
    print("reproduce: python bench/bench_ssd.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
