"""The CPU kernel against gsplat on a GPU (skipped on machines without CUDA and gsplat)."""

from __future__ import annotations

import pytest
import torch
from render_scenes import tricky_scene

from model.render import rasterize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("sh_degree, render_mode", [(None, "RGB"), (3, "RGB+ED")])
def test_cpu_backend_matches_gsplat(sh_degree, render_mode):
    pytest.importorskip("gsplat")
    scene = tricky_scene(n=400, n_cameras=2, width=64, height=48, batch=(2,), sh_degree=sh_degree, seed=7)
    scene["backgrounds"] = torch.rand(2, 2, 3)

    def run(device: str, backend: str):
        inputs = {k: (v.to(device).requires_grad_(k in ("means", "colors", "opacities")) if isinstance(v, torch.Tensor) else v)
                  for k, v in scene.items()}  # fmt: skip
        colors, alphas, meta = rasterize(**inputs, render_mode=render_mode, backend=backend)
        (colors.sum() + alphas.sum()).backward()
        grads = [inputs[k].grad.cpu() for k in ("means", "colors", "opacities")] + [meta["means2d"].grad.cpu()]
        return colors.detach().cpu(), alphas.detach().cpu(), meta["radii"].cpu(), grads

    ours, theirs = run("cpu", "cpu"), run("cuda", "gsplat")
    # gsplat evaluates exp with the fast CUDA intrinsic, so pixels at the 1/255 edge may differ.
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=2e-3)
    torch.testing.assert_close(ours[0][..., :3], theirs[0][..., :3], rtol=0, atol=2e-3)
    assert (ours[2] != theirs[2]).float().mean() < 0.01
    for got, want in zip(ours[3], theirs[3]):
        scale = want.abs().max()
        assert (got - want).abs().max() <= 2e-2 * scale
