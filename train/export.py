"""Export a training checkpoint's weights as one self-describing `.safetensors` file for inference.

    python -m train.export --checkpoint runs/demo --out checkpoints/demo/model.safetensors [--fp16]

The file keeps the model and training configs in its metadata (infer.py rebuilds the network and
takes its default resolution and view count from them) and, as its own entry, the preprocessing
inference must apply (resize filter, scene_scale, keep rule; see model/pretrained.py), derived
from the training config once here. --fp16 halves the size; weights are cast back to float32 when loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from model.pretrained import WEIGHTS, resolve_checkpoint, training_recipe


def export(checkpoint: Path, out: Path, fp16: bool = False) -> Path:
    source = checkpoint if checkpoint.suffix == ".safetensors" else resolve_checkpoint(checkpoint) / WEIGHTS
    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata() or {})
        weights = {k: f.get_tensor(k) for k in f.keys()}
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    meta["source_checkpoint"] = source.parent.name
    _, _, preprocessing = training_recipe(json.loads(meta.get("train_config", "{}") or "{}"), source)
    meta["preprocessing"] = json.dumps(preprocessing.as_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    save_file(weights, str(tmp), metadata=meta)
    tmp.replace(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory, run directory or .safetensors")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fp16", action="store_true")
    args = p.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out, args.fp16)
    except (FileNotFoundError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
