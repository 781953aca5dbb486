"""Optimizer parameter groups and the cosine-with-warmup learning rate."""

import math

import pytest
import torch
from torch import nn

from train.optim import CosineWithWarmup, build_optimizer, build_scheduler, split_decay


class GatedNorm(nn.Module):  # a custom norm class, as Mamba2's gated RMSNorm
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class FakeMamba(nn.Module):
    def __init__(self, d=8, heads=2):
        super().__init__()
        self.in_proj = nn.Linear(d, 2 * d, bias=False)
        self.conv1d = nn.Conv1d(d, d, 4, groups=d)
        self.A_log = nn.Parameter(torch.zeros(heads))
        self.D = nn.Parameter(torch.ones(heads))
        self.dt_bias = nn.Parameter(torch.zeros(heads))
        self.norm = GatedNorm(d)
        self.out_proj = nn.Linear(d, d, bias=False)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.global_tokens = nn.Parameter(torch.zeros(2, 8))
        self.embed = nn.Linear(8, 8, bias=False)
        self.ln = nn.LayerNorm(8, bias=False)
        self.mamba = FakeMamba()
        self.merge = nn.Conv2d(8, 16, 2, stride=2, groups=8, bias=True)
        self.head = nn.Linear(16, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def expected_no_decay(name: str, param: torch.Tensor) -> bool:
    """The rules, written independently: 1-D tensors, biases, norms, and the Mamba2 SSM scalars."""
    last = name.rsplit(".", 1)[-1]
    in_norm = ".norm." in f".{name}" or name.startswith("ln.")
    return param.dim() == 1 or last in ("bias", "A_log", "D", "dt_bias") or in_norm


def test_no_decay_exactly_the_intended_parameters():
    model = Toy()
    decay, no_decay = split_decay(model)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(decay + no_decay) == sorted(trainable)
    assert set(no_decay) == {n for n, p in trainable.items() if expected_no_decay(n, p)}
    assert set(decay) == {"global_tokens", "embed.weight", "mamba.in_proj.weight", "mamba.conv1d.weight",
                          "mamba.out_proj.weight", "merge.weight", "head.weight"}
    optimizer = build_optimizer(model, 1e-3, (0.9, 0.95), 0.05)
    groups = {g["weight_decay"]: set(g["names"]) for g in optimizer.param_groups}
    assert groups == {0.05: set(decay), 0.0: set(no_decay)}
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def closed_form(step, base, warmup, total, min_ratio=0.0):
    if step < warmup:
        return base * step / warmup
    progress = (step - warmup) / (total - warmup)
    return base * (min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2)


@pytest.mark.parametrize("warmup,min_ratio", [(10, 0.0), (0, 0.0), (10, 0.1)])
def test_cosine_with_warmup_matches_closed_form(warmup, min_ratio):
    total, base = 100, 4e-4
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2, 2))], lr=base)
    scheduler = build_scheduler(optimizer, warmup, total, min_ratio)
    seen = {}
    for step in range(total + 5):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    for step in (0, 1, 5, warmup, warmup + 1, 50, 99, 100, 104):
        expected = closed_form(min(step, total), base, warmup, total, min_ratio)
        assert seen[step] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert seen[100] == pytest.approx(base * min_ratio, abs=1e-15)
    with pytest.raises(ValueError):
        CosineWithWarmup(10, 10)


def test_scheduler_state_round_trips():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler = build_scheduler(optimizer, 5, 50)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    optimizer2 = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler2 = build_scheduler(optimizer2, 5, 50)
    optimizer2.load_state_dict(optimizer.state_dict())
    scheduler2.load_state_dict(scheduler.state_dict())
    optimizer.step(), optimizer2.step()
    scheduler.step(), scheduler2.step()
    assert optimizer.param_groups[0]["lr"] == optimizer2.param_groups[0]["lr"]


def test_no_decay_on_the_real_network():
    """The tiny Long-LRM: decay exactly the matrices, kernels and global tokens, by name."""
    import re

    from model.build import build_model

    model = build_model("tiny")
    decay, no_decay = split_decay(model)
    rule = re.compile(r"(\.bias|\.A_log|\.D|\.dt_bias|norm\d?\.weight)$")
    names = [n for n, _ in model.named_parameters()]
    assert set(no_decay) == {n for n in names if rule.search(n)}
    assert set(decay) == {n for n in names if not rule.search(n)}
    assert "tokenizer.global_tokens" in decay and "blocks.0.mamba.mamba_scans.1.A_log" in no_decay
