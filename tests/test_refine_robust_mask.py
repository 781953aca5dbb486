import math

import torch

from refine.robust import ErrorHistogram, Utilization, inlier_mask, sampled_mask, warmup_alpha


def test_histogram_threshold_is_the_running_percentile():
    errors = torch.rand(200_000, generator=torch.Generator().manual_seed(0)) ** 2  # skewed towards 0
    hist = ErrorHistogram(percentile=0.7, bin_width=1e-3)
    hist.update(errors.reshape(400, 500))
    assert abs(hist.threshold - float(torch.quantile(errors, 0.7))) <= 1.5e-3


def test_histogram_discounts_old_views():
    hist = ErrorHistogram(percentile=0.7, bin_width=1e-3, decay=0.95)
    hist.update(torch.full((10, 10), 0.9005))  # older view: weight 0.95
    hist.update(torch.full((10, 10), 0.1005))  # newer view: weight 1
    # 0.7 of the total mass 1.95 is 1.365 > 1: the percentile falls into the old view's bin [0.900, 0.901)
    assert math.isclose(hist.threshold, 0.900, abs_tol=1e-9)
    hist = ErrorHistogram(percentile=0.5, bin_width=1e-3, decay=0.95)
    hist.update(torch.full((10, 10), 0.9005))
    hist.update(torch.full((10, 10), 0.1005))
    assert math.isclose(hist.threshold, 0.100, abs_tol=1e-9)  # 0.975 < 1: the newer view's bin


def test_inlier_mask_keeps_isolated_pixels_and_drops_blobs():
    error = torch.zeros(10, 12)
    error[2:6, 3:7] = 0.5  # a 4x4 distractor
    error[8, 10] = 0.5  # one isolated high-error pixel (fine detail)
    mask = inlier_mask(error, threshold=0.1)
    expected = torch.ones(10, 12)
    expected[2:6, 3:7] = 0
    # a blob corner has 5 of 9 inlier neighbours -> majority inlier -> kept
    for i, j in [(2, 3), (2, 6), (5, 3), (5, 6)]:
        expected[i, j] = 1
    assert torch.equal(mask, expected)
    batched = inlier_mask(torch.stack([error, torch.zeros(10, 12)]), 0.1)
    assert torch.equal(batched[0], expected) and batched[1].all()


def test_warmup_schedule_and_sampling():
    beta = -3e-3
    assert warmup_alpha(0, beta) == 1.0
    assert math.isclose(warmup_alpha(2, beta), math.exp(2 * beta))  # floor(3 / 1.5) = 2
    assert math.isclose(warmup_alpha(1000, beta), math.exp(667 * beta))  # floor(1001 / 1.5) = 667
    mask = (torch.rand(50, 50, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    assert sampled_mask(mask, 1.0).all()
    assert torch.equal(sampled_mask(mask, 0.0), mask)
    half = sampled_mask(mask, 0.5, torch.Generator().manual_seed(2))
    assert half[mask == 1].all()
    assert abs(float(half[mask == 0].mean()) - 0.5) < 0.1


def test_utilization_flags_gaussians_no_view_uses():
    util = Utilization(4)
    grad = torch.tensor([[[1e-3, 0.0], [0.0, 0.0], [2e-3, 1e-3], [5.0, 5.0]]])  # [C=1, N=4, 2] pixels
    radii = torch.tensor([[[4, 4], [3, 2], [2, 1], [0, 0]]])  # the last is not visible: its gradient must not count
    util.add(grad, radii, width=64, height=48)
    util.add(torch.zeros_like(grad), radii, width=64, height=48)
    # mean over 2 steps of |dL/dndc|^2: (1e-3 * 32)^2 / 2 = 5.12e-4
    assert torch.allclose(util.sq_grad / util.steps, torch.tensor([5.12e-4, 0.0, (4e-6 * 1024 + 1e-6 * 576) / 2, 0.0]))
    assert util.unused(1e-14).tolist() == [False, True, False, True]
