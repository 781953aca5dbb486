import math

import pytest

from refine.config import RefineConfig
from refine.schedule import DensitySchedule, ExponentialLR


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


# graphdeco's 30k-step run, written out from its defaults (densify every 100 steps after 500 while
# below 15k; opacity reset every 3000 while densifying, and at step 500 on a white background).
GRAPHDECO_DENSIFY = list(range(600, 15_000, 100))
GRAPHDECO_RESETS = [3000, 6000, 9000, 12_000]


def test_classic_preset_at_its_own_length_is_graphdeco():
    events = DensitySchedule(RefineConfig.preset("classic")).events()
    assert events["densify"] == GRAPHDECO_DENSIFY and events["opacity_reset"] == GRAPHDECO_RESETS
    assert events["ubp"] == []
    white = DensitySchedule(RefineConfig.preset("classic"), white_background=True).events()
    assert white["opacity_reset"] == [500] + GRAPHDECO_RESETS


@pytest.mark.parametrize("steps, densify, resets", [
    # densification in the first half at graphdeco's interval; resets every 3000 steps within it, plus
    # the white-background one at the scaled densify_from
    (3000, list(range(100, 1500, 100)), [50]),  # a tenth of graphdeco's run
    (6000, list(range(200, 3000, 100)), [100]),
    (12_000, list(range(300, 6000, 100)), [200, 3000]),
    (60_000, list(range(1100, 30_000, 100)), [1000] + list(range(3000, 30_000, 3000))),
])
def test_scaled_classic_schedule_closed_form(steps, densify, resets):
    config = RefineConfig.preset("classic", steps=steps)
    events = DensitySchedule(config, white_background=True).events()
    assert events["densify"] == densify and events["opacity_reset"] == resets
    assert config.sh_degree_interval == steps // 30  # SH degree 3 reached at a tenth of the run
    assert config.position_max_steps == steps


@pytest.mark.parametrize("steps", [1, 2, 7, 50, 100, 299, 300, 500, 999, 1000, 3000, 4500, 6000, 7001, 30_000, 45_000])
@pytest.mark.parametrize("preset, robust", [("classic", False), ("classic", True), ("short", True)])
def test_second_half_of_any_run_is_free_of_density_control(steps, preset, robust):
    config = RefineConfig.preset(preset, steps=steps, robust=robust)
    events = DensitySchedule(config, white_background=True).events()
    for kind, at in events.items():
        assert all(2 * step <= steps for step in at), (kind, at[-3:])
    if preset == "classic" and steps >= 300:  # the scaled schedule still acts
        assert events["ubp" if robust else "densify"]


def test_hand_set_schedule_leaves_the_second_half_alone():
    # graphdeco's step numbers taken literally in a 3000-step run: step 3000 is a multiple of the reset
    # interval below densify_until, and densification would go on to the last step.
    config = RefineConfig.preset("classic").replace(steps=3000)
    events = DensitySchedule(config, white_background=True).events()
    assert events["opacity_reset"] == [500]
    assert events["densify"] == list(range(600, 1501, 100))
    config = config.replace(opacity_reset_interval=1000)
    assert DensitySchedule(config).events()["opacity_reset"] == [1000]
