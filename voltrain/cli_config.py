"""The config-writing subcommands of the command line: ``voltrain init`` and ``voltrain schema``.

Kept apart from ``voltrain.cli`` so that the main parser only registers them; errors are
``VoltrainError``s, printed by ``voltrain.cli.main`` as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voltrain.errors import VoltrainError
from voltrain.init_task import TASK_NAMES


def add_config_parsers(commands) -> None:
    """Register ``init`` and ``schema`` on the ``voltrain`` subcommand parser."""
    init = commands.add_parser(
        "init", help="write a commented experiment YAML that fits your arrays"
    )
    init.add_argument("--raw", required=True, help="raw array, e.g. data.zarr/raw")
    init.add_argument("--gt", required=True, help="label array, e.g. data.zarr/labels")
    init.add_argument("--mask", help="mask array: where the labels can be trusted")
    init.add_argument("--task", default="affinities", choices=TASK_NAMES)
    init.add_argument(
        "--num-classes",
        type=int,
        help="classes of --task multiclass, background included (default: the largest id "
        "in --gt plus one, read when --gt is small enough)",
    )
    init.add_argument(
        "--input-size",
        help="network input: a voxel count (2e6, 500k, 2M) or a shape Z,Y,X; it is moved "
        "to the nearest shape the U-Net accepts (default: what --memory allows)",
    )
    init.add_argument(
        "--memory", type=float, default=8.0, help="GiB of accelerator memory to plan for"
    )
    init.add_argument("--levels", type=int, default=3, help="U-Net levels below the top")
    init.add_argument("--num-fmaps", type=int, default=12, help="feature maps at the top")
    init.add_argument("--out", default="config.yaml", help="where to write the YAML")
    init.add_argument("--force", action="store_true", help="replace an existing --out")

    schema = commands.add_parser("schema", help="print the JSON schema of the experiment YAML")
    schema.add_argument("--out", help="write it to this file instead of printing it")


def run_init(args: argparse.Namespace) -> None:
    """``voltrain init``: inspect the arrays, then write the config and say what was chosen."""
    from voltrain.init_config import InitRequest, write_initial_config

    out = Path(args.out)
    if out.exists() and not args.force:
        raise VoltrainError(f"--out: {out} exists; pass --force to replace it")
    request = InitRequest(
        raw=args.raw,
        gt=args.gt,
        mask=args.mask,
        task=args.task,
        input_size=args.input_size,
        memory_gib=args.memory,
        levels=args.levels,
        num_fmaps=args.num_fmaps,
        num_classes=args.num_classes,
    )
    summary = write_initial_config(request, out)
    print(summary)


def run_schema(args: argparse.Namespace) -> None:
    """``voltrain schema``: print or write the JSON schema."""
    from voltrain.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if args.out is None:
        print(text, end="")
        return
    out = Path(args.out)
    if not out.parent.is_dir():
        raise VoltrainError(f"--out: directory {out.parent} does not exist")
    out.write_text(text)
    print(f"schema: {out}")


CONFIG_COMMANDS = {"init": run_init, "schema": run_schema}
"""Subcommand name -> handler, merged into ``voltrain.cli.main``'s dispatch."""
