"""Install the project: `pip install -e .` (CPU or CUDA), `pip install -e .[test]` for the test suite.

torch is pinned exactly so that pip never swaps the installed build for another one (on CPU-only
machines a looser range would pull the newest CUDA build and several GB of CUDA libraries).
The CPU rasterizer in csrc/ is compiled just in time on first use (cached), so installing needs no
compiler-enabled torch build environment and no build isolation tricks.
"""

from setuptools import find_packages, setup

TORCH = "torch==2.13.0"

setup(
    name="longlrm-splat",
    version="0.1.0",
    description="Feed-forward 3D Gaussian Splatting from many posed views (Long-LRM style), CPU and CUDA",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["model*", "data*", "train*", "refine*", "inference*", "view*"]),
    py_modules=["infer", "evaluate"],
    package_data={"train": ["configs/*.yaml"]},
    include_package_data=True,
    install_requires=[
        TORCH,
        "numpy",
        "accelerate>=1.0",
        "webdataset>=1.0",
        "transformers>=4.45",
        "safetensors",
        "einops",
        "plyfile",
        "tqdm",
        "tensorboard",
        "scikit-learn",
        "scipy",
        "pillow",
        "imageio",
        "imageio-ffmpeg",
        "pycolmap>=4.2",  # camera poses for photos and videos without them (CPU wheels); COLMAP model reader
        "pyyaml",
        "omegaconf>=2.4",
        "psutil",
        "ninja",
        # The browser viewer (`python -m view`, `infer.py --view`) and the .splat / compressed-PLY exports:
        # pure-Python wheels, no CUDA needed (gsplat's exporter is plain PyTorch; its CUDA kernels are only
        # compiled when rendering on a GPU).
        "viser>=1.1",
        "gsplat>=1.5.3",
    ],
    extras_require={
        # opencv-python-headless: the resize oracle (the official pipeline's cv2.resize), tests only
        "test": ["pytest", "scikit-image", "opencv-python-headless"],
        # GPU kernels. They compile against the installed torch: install them after the project with
        # `pip install --no-build-isolation -e .[cuda]` (see README for a known-good version set).
        "cuda": ["gsplat>=1.5.3", "packaging", "mamba-ssm", "causal-conv1d", "flash-attn"],
        "wandb": ["wandb"],
    },
)
