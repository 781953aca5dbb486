"""Install the project: `pip install -e .` (CPU or CUDA), `pip install -e .[test]` for the test suite;
`pip install .` installs a copy with the commands longlrm-infer, longlrm-evaluate, longlrm-refine, longlrm-view.

torch is a range, so pip keeps a supported torch that is already installed (a GPU user's CUDA build)
instead of replacing it. 2.6 is the oldest torch for which every package of the [cuda] extra
publishes prebuilt wheels. The upper bound stays below the newest releases: with no torch installed
pip takes 2.13.0, the version the project is tested with, and a CPU build of it where one is offered
(a local wheel or index), not a newer CUDA build with several GB of CUDA libraries.
The CPU rasterizer in csrc/ is compiled just in time on first use (cached), so installing needs no
compiler-enabled torch build environment and no build isolation tricks.
"""

from setuptools import find_packages, setup

TORCH = "torch>=2.6,<2.14"

setup(
    name="longlrm-splat",
    version="0.1.0",
    description="Feed-forward 3D Gaussian Splatting from many posed views (Long-LRM style), CPU and CUDA",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # csrc/ (the CPU rasterizer, compiled on first use) and checkpoints/ (the demo network) ship inside
    # the model package, so a non-editable install finds them next to the code that reads them.
    packages=find_packages(include=["model*", "data*", "train*", "refine*", "inference*", "view*"])
    + ["model.csrc", "model.checkpoints"],
    package_dir={"model.csrc": "csrc", "model.checkpoints": "checkpoints"},
    package_data={"train": ["configs/*.yaml"], "model.csrc": ["*.cpp", "*.h"],
                  "model.checkpoints": ["demo/*.safetensors", "demo/*.md"]},
    include_package_data=True,
    # The commands, installed; a source checkout also runs them as `python infer.py`, `python evaluate.py`,
    # `python -m refine` and `python -m view`. No top-level module is installed besides the packages (a
    # module named `evaluate` would hide Hugging Face's).
    entry_points={"console_scripts": [
        "longlrm-infer = inference.infer:main",
        "longlrm-evaluate = inference.evaluate:main",
        "longlrm-refine = refine.__main__:main",
        "longlrm-view = view.__main__:main",
    ]},
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
        # GPU kernels, for torch 2.6-2.8 with CUDA 12 (README, "GPU"). mamba-ssm, causal-conv1d and
        # flash-attn ship no wheels on PyPI: their setup scripts fetch a prebuilt wheel matching the
        # installed torch, hence `pip install --no-build-isolation -e .[cuda]` after torch and the project.
        # gsplat compiles its CUDA code on first use (needs nvcc) and imports the undeclared `packaging`.
        "cuda": ["mamba-ssm==2.3.1", "causal-conv1d==1.6.2.post1", "flash-attn==2.8.3",
                 "gsplat==1.5.3", "packaging"],
        "wandb": ["wandb"],
    },
)
