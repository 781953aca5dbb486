"""Writing results: the output folder, 8-bit PNG renders, JSON files and the fly-through video.

Metrics are computed on the images exactly as saved (8-bit), so anyone can recompute them from
the files in `renders/` and get the numbers in `metrics.json`.

An output folder is checked before any work (a file, a folder with someone else's files, a folder
this process cannot write in, a full disk), and a run writes into a staging folder inside it that
is moved into place only once everything is written: a run that fails or is interrupted leaves
the folder as it was, never half of its outputs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor


def quantize(images: Tensor) -> Tensor:
    """Round float images in [0, 1] to the 8-bit grid they are saved on, back as float."""
    return (images.clamp(0, 1) * 255).round() / 255


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()  # [H, W, 3]


def save_png(image: Tensor, path: Path) -> None:
    iio.imwrite(path, to_uint8(image))


STAGING = ".partial-outputs"  # the staging folder inside an output folder


def write_text(text: str, path: Path) -> None:
    """Write a text file atomically: a reader never sees half of it, and a failed write keeps the old one."""
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(data, path: Path) -> None:
    write_text(json.dumps(data, indent=2), path)


def output_folder(out: Path, allow_existing: bool = False, option: str = "--out") -> Path | None:
    """Make sure `out` can take a command's outputs, before any work: not a file, empty unless
    `allow_existing`, and writable (a file is created, written to disk and removed). Creates it;
    returns the topmost folder this created (None if `out` existed), for `discard` to remove."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{option} {out} is a file; choose a folder")
    if out.is_dir() and not allow_existing and any(p.name != STAGING for p in out.iterdir()):
        raise FileExistsError(f"{option} {out} exists and is not empty; choose another folder or pass --overwrite")
    created = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    probe = out / f"{STAGING}-write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        try:
            with probe.open("wb") as f:
                f.write(b"0")
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as err:
        discard(created)
        raise PermissionError(f"{option} {out} cannot be written to ({err.strerror}); choose a folder you can write "
                              "to, on a disk with free space") from None
    return created


def discard(created: Path | None) -> None:
    """Remove the folders `output_folder` created, if nothing was put in them."""
    if created is None:
        return
    for folder in sorted((p for p in created.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [created]:
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def staged_outputs(out: Path, allow_existing: bool = False, option: str = "--out") -> Iterator[Path]:
    """Check `out` (`output_folder`), then yield a staging folder inside it for the run's outputs.

    On success every file is moved into `out` (replacing files of the same names, touching nothing
    else). On any failure, Ctrl-C included, the staging folder and the folders this created are
    removed, and a failed write is re-raised as one OSError naming the folder and the fix.
    """
    created = output_folder(out, allow_existing, option)
    stage = out / STAGING
    try:
        shutil.rmtree(stage, ignore_errors=True)  # left by a run that was killed
        stage.mkdir()
        yield stage
        for src in sorted(p for p in stage.rglob("*") if not p.is_dir()):
            dst = out / src.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        shutil.rmtree(stage)
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        discard(created)
        if isinstance(err, OSError) and _writing(err, out):
            raise OSError(f"writing the outputs to {out} failed ({err.strerror}); the partial outputs were removed: "
                          f"free space on its disk or choose another {option}") from None
        raise


def _writing(err: OSError, out: Path) -> bool:
    """Whether `err` is a failed write into `out`: it names a file there, or it is an error only writes
    raise (full disk, quota, file size limit), which name no file."""
    if err.filename is not None:
        return Path(err.filename).resolve().is_relative_to(out.resolve())
    return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_video(frames: list[Tensor], path: Path, fps: int = 24) -> None:
    """Encode frames [H, W, 3] (H and W even, as H.264 needs) to an mp4 with imageio's ffmpeg."""
    import imageio.v2 as iio2

    with iio2.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=1) as writer:
        for frame in frames:
            writer.append_data(to_uint8(frame))
