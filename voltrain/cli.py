"""The ``voltrain`` command line.

User errors (``VoltrainError``) are caught here, once, and printed as one line with exit
code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from voltrain.errors import NanLossError, VoltrainError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voltrain", description="Train 3D networks on large zarr microscopy volumes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train from an experiment YAML")
    train.add_argument("config", help="experiment YAML file")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--iterations", type=int, help="train up to this iteration")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    demo = commands.add_parser("demo", help="train on a synthetic volume generated here")
    demo.add_argument("--out", default="runs/demo", help="directory for data and run")
    demo.add_argument("--iterations", type=int, help="iterations (default: the demo config's)")
    demo.add_argument("--size", type=int, default=96, help="synthetic volume edge, voxels")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _train(args: argparse.Namespace) -> None:
    from voltrain.experiment import load_config
    from voltrain.run import train

    if args.iterations is not None and args.iterations <= 0:
        raise VoltrainError(f"--iterations must be positive, got {args.iterations}")
    config = load_config(args.config)
    result = train(
        config,
        args.out,
        iterations=args.iterations,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    _report(result)


def _demo(args: argparse.Namespace) -> None:
    from voltrain.demo import run_demo

    if args.size < 48:
        raise VoltrainError(f"--size must be at least 48 voxels, got {args.size}")
    if args.iterations is not None and args.iterations <= 0:
        raise VoltrainError(f"--iterations must be positive, got {args.iterations}")
    result = run_demo(
        args.out,
        iterations=args.iterations,
        size=args.size,
        device=args.device,
        progress=not args.no_progress,
    )
    _report(result)


def _report(result) -> None:
    loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
    print(f"trained to iteration {result.iteration}, last logged loss {loss}")
    print(f"snapshots:   {result.snapshots}")
    print(f"checkpoint:  {result.checkpoint}")
    print(f"metrics:     {result.out_dir / 'metrics.jsonl'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        {"train": _train, "demo": _demo}[args.command](args)
    except NanLossError as error:
        print(f"voltrain: error: {error}", file=sys.stderr)
        return 1
    except VoltrainError as error:
        print(f"voltrain: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("voltrain: interrupted", file=sys.stderr)
        return 130
    return 0
