"""Command line shared by every stage entry point.

    python train/stage1.py [--config FILE] [--run-dir DIR] [--resume [CHECKPOINT]] [--data SOURCE]
                           [--debug] [key.sub=value ...]

`--resume` alone resumes from the latest checkpoint in the run directory; with a path, from that
checkpoint (or that run directory's latest). `--data synthetic` (or the override `data=synthetic`)
swaps the data source for procedural scenes rendered on the fly, keeping every other setting.
Overrides use the syntax of model.typed_config (`optim.lr=2e-4`, `data.paths=[/a, /b]`).
Mistakes end the program with one line on stderr and exit code 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from model.typed_config import load_config
from train.config import DATA_SOURCES, TrainConfig

LATEST = "latest"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        fail(f"{message} (usage: {self.prog} [--config FILE] [--run-dir DIR] [--resume [CHECKPOINT]] "
             f"[--data {{{','.join(DATA_SOURCES)}}}] [--debug] [key.sub=value ...])")


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


@dataclass
class Command:
    config: TrainConfig
    resume: str | None  # None, LATEST, or a checkpoint / run directory
    debug: bool = False  # mistakes raise with their traceback instead of one line


def parse(argv: list[str], default_config: str | Path | None, prog: str) -> Command:
    parser = _Parser(prog=prog, add_help=True)
    parser.add_argument("--config", default=default_config)
    parser.add_argument("--run-dir")
    parser.add_argument("--resume", nargs="?", const=LATEST)
    parser.add_argument("--data", choices=DATA_SOURCES)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.resume is not None and "=" in args.resume and not Path(args.resume).exists():
        # `--resume key=value`: the flag had no path and swallowed an override.
        args.overrides.insert(0, args.resume)
        args.resume = LATEST
    for item in args.overrides:
        if "=" not in item:
            fail(f"unexpected argument {item!r}: overrides look like key.sub=value")
    # `data=<source>` is shorthand for `data.source=<source>`.
    overrides = [f"data.source={o.split('=', 1)[1]}" if o.split("=", 1)[0] == "data" else o for o in args.overrides]
    if args.data:
        overrides.append(f"data.source={args.data}")
    try:
        config = load_config(TrainConfig, args.config, overrides)
    except ValueError as e:
        if args.debug:
            raise
        fail(str(e).replace("\n", " "))
    if args.run_dir:  # taken verbatim: a path is not parsed as a YAML value
        config = dataclasses.replace(config, run_dir=args.run_dir)
    return Command(config=config, resume=args.resume, debug=args.debug)
