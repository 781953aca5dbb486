import math

import pytest

from refine.config import RefineConfig
from refine.schedule import ExponentialLR


def test_endpoints_and_geometric_midpoint():
    s = ExponentialLR(lr_init=1.6e-4, lr_final=1.6e-6, max_steps=30_000)
    assert s(0) == pytest.approx(1.6e-4, rel=1e-12)
    assert s(30_000) == pytest.approx(1.6e-6, rel=1e-12)
    assert s(15_000) == pytest.approx(math.sqrt(1.6e-4 * 1.6e-6), rel=1e-12)
    assert s(60_000) == pytest.approx(1.6e-6, rel=1e-12)  # held after max_steps
    assert s(-1) == 0.0


def test_log_linear_at_arbitrary_step():
    s = ExponentialLR(lr_init=2.0, lr_final=0.5, max_steps=400)
    # ratio 1/4 over 400 steps: lr(t) = 2 * 4^(-t/400); at t=100 that is 2 / sqrt(2)
    assert s(100) == pytest.approx(2.0 / math.sqrt(2.0), rel=1e-12)
    assert s(300) == pytest.approx(2.0 * 4 ** (-0.75), rel=1e-12)


def test_sine_delay():
    s = ExponentialLR(lr_init=1.0, lr_final=1e-2, max_steps=1000, lr_delay_steps=100, lr_delay_mult=0.01)
    assert s(0) == pytest.approx(0.01, rel=1e-12)
    # halfway through the delay the factor is 0.01 + 0.99 sin(pi/4)
    base = 1e-2 ** (50 / 1000)
    assert s(50) == pytest.approx((0.01 + 0.99 * math.sqrt(0.5)) * base, rel=1e-12)
    assert s(100) == pytest.approx(1e-2 ** 0.1, rel=1e-12)  # delay over: pure exponential


def test_config_ties_decay_to_run_length():
    assert RefineConfig(steps=700).position_max_steps == 700
    assert RefineConfig(steps=700, position_lr_max_steps=30_000).position_max_steps == 30_000
    with pytest.raises(ValueError):
        ExponentialLR(lr_init=1.0, lr_final=0.0, max_steps=10)
    with pytest.raises(ValueError, match="unknown refinement preset"):
        RefineConfig.preset("fast")
