"""Differentiable Gaussian rasterization with gsplat's signature: gsplat on CUDA, C++ on CPU."""

from .api import rasterize

__all__ = ["rasterize"]
