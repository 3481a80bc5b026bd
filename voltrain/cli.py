"""The ``voltrain`` command line.

User errors (``VoltrainError``) are caught here, once, and printed as one line with exit
code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from voltrain.cli_config import CONFIG_COMMANDS, add_config_parsers
from voltrain.cli_results import (
    RESULT_COMMANDS,
    add_results_parsers,
    add_segment_options,
    check_segment_options,
    segment_command,
)
from voltrain.errors import ConfigError, NanLossError, VoltrainError
from voltrain.profiling import PROFILE_ENV

if TYPE_CHECKING:
    from voltrain.run import RunResult


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voltrain", description="Train 3D networks on large zarr microscopy volumes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train from an experiment YAML")
    train.add_argument("config", help="experiment YAML file")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument(
        "--iterations",
        type=int,
        help="train up to this iteration (absolute; default: trainer.steps or max_steps)",
    )
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--profile", action="store_true", help="time each data-pipeline stage per sample"
    )

    demo = commands.add_parser("demo", help="train on a synthetic volume generated here")
    demo.add_argument("--out", default="runs/demo", help="directory for data and run")
    demo.add_argument("--iterations", type=int, help="iterations (default: the demo config's)")
    demo.add_argument("--size", type=int, default=96, help="synthetic volume edge, voxels")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_predict_parsers(commands)
    _add_lr_find_parser(commands)
    add_config_parsers(commands)
    add_results_parsers(commands)
    _add_view_parser(commands)
    return parser


def _config_file(path: str) -> str:
    """``path`` if it is a file. Checked before torch and gunpowder are imported (seconds),
    so a mistyped config path is reported at once."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: config file not found")
    return path


def _train(args: argparse.Namespace) -> None:
    _config_file(args.config)
    from voltrain.experiment import load_config
    from voltrain.run import train

    if args.iterations is not None and args.iterations <= 0:
        raise VoltrainError(f"--iterations must be positive, got {args.iterations}")
    if args.profile:
        # read by TrainingPipeline in every loader worker (spawned, so they inherit it)
        os.environ[PROFILE_ENV] = "1"
    config = load_config(args.config)
    result = train(
        config,
        args.out,
        iterations=args.iterations,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    if result.is_main:  # under torchrun, rank 0 speaks for the run
        _report(result)


def _demo(args: argparse.Namespace) -> None:
    from voltrain.demo import run_demo, score_demo
    from voltrain.scoring import format_scores

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
    print("\nscoring the held-out volume (predict, segment, evaluate) ...", flush=True)
    for segmenter, rows in score_demo(args.out, result, device=args.device).items():
        print(f"\nsegmented by {segmenter}:\n{format_scores(rows)}")


def _add_predict_parsers(commands) -> None:
    predict = commands.add_parser("predict", help="predict a whole volume block by block")
    predict.add_argument("config", help="experiment YAML the checkpoint was trained with")
    predict.add_argument("--checkpoint", required=True, help="checkpoint file (.pt)")
    predict.add_argument("--input", required=True, help="raw zarr array, e.g. data.zarr/raw")
    predict.add_argument("--output", required=True, help="output zarr array, e.g. out.zarr/pred")
    predict.add_argument("--roi", help="OFFSET:SHAPE in world units (default: whole input)")
    predict.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument("--block-timeout", type=float, default=600.0, help="seconds per block")
    predict.add_argument("--max-retries", type=int, default=2, help="retries of a failed block")
    predict.add_argument("--host", default="127.0.0.1", help="address workers connect to")
    predict.add_argument("--worker-command", help="start each worker with it, e.g. 'srun -n1'")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output")
    predict.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict.add_argument(
        "--block-shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="output voxels per block (default: the training output shape)",
    )
    predict.add_argument(
        "--weights",
        choices=("student", "teacher"),
        default="student",
        help="the trained model (default) or a semi-supervised run's mean teacher",
    )
    predict.add_argument("--segment", metavar="SEG", help="then segment into this zarr group")
    add_segment_options(predict)
    worker = commands.add_parser("predict-worker", help="one prediction worker (for clusters)")
    worker.add_argument("spec", help="<output>.done/worker.json written by voltrain predict")


def _predict(args: argparse.Namespace) -> None:
    import shlex

    _config_file(args.config)
    from voltrain.predict import predict

    if args.segment:
        check_segment_options(args)
    result = predict(
        args.config,
        args.checkpoint,
        args.input,
        args.output,
        roi=args.roi,
        workers=args.workers,
        device=args.device,
        block_timeout=args.block_timeout,
        max_retries=args.max_retries,
        host=args.host,
        worker_command=shlex.split(args.worker_command) if args.worker_command else None,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        block_shape=args.block_shape,
        weights=args.weights,
    )
    before = result.blocks - result.blocks_predicted
    print(f"predicted {result.blocks_predicted} of {result.blocks} blocks, {before} done before")
    if result.blocks_predicted:
        print(f"{result.voxels_per_second:.0f} voxels/s over {result.seconds:.1f} s")
    print(f"output:      {result.output} (complete)")
    if args.segment:
        segment_command(args, result.output, args.segment)


def _predict_worker(args: argparse.Namespace) -> None:
    from voltrain.predict import PredictionSpec, run_worker

    run_worker(PredictionSpec.read(args.spec))


def _add_lr_find_parser(commands) -> None:
    finder = commands.add_parser("lr-find", help="sweep the learning rate, suggest one")
    finder.add_argument("config", help="experiment YAML file")
    finder.add_argument("--out", default="runs/lr-find", help="directory for plot and table")
    finder.add_argument("--iterations", type=int, default=100, help="sweep length (default 100)")
    finder.add_argument("--min-lr", type=float, default=1e-7, help="first learning rate")
    finder.add_argument("--max-lr", type=float, default=1.0, help="last learning rate")
    finder.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    finder.add_argument("--no-progress", action="store_true", help="no progress bar")


def _lr_find(args: argparse.Namespace) -> None:
    _config_file(args.config)
    from voltrain.experiment import load_config
    from voltrain.lr_find import describe, find_learning_rate

    result = find_learning_rate(
        load_config(args.config),
        args.out,
        iterations=args.iterations,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        device=args.device,
        progress=not args.no_progress,
    )
    print(describe(result))


def _add_view_parser(commands) -> None:
    viewer = commands.add_parser(
        "view", help="show a run's latest snapshot or arrays in neuroglancer"
    )
    viewer.add_argument("paths", nargs="+", help="run directory, OME-NGFF image or zarr array")
    viewer.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any)")
    viewer.add_argument("--no-browser", action="store_true", help="only print the URL")
    viewer.add_argument(
        "--serve-seconds", type=float, help="stop serving after this long (default: Ctrl-C)"
    )


def _view(args: argparse.Namespace) -> None:
    from voltrain.view import view

    view(args.paths, args.port, not args.no_browser, args.serve_seconds)


def _report(result: RunResult) -> None:
    if result.profile_table:
        print(result.profile_table)
    loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
    stopped = " (stopped early by a callback)" if result.stopped_early else ""
    recent = _recent_mean_loss(result.out_dir / "metrics.jsonl")
    # one batch's loss is noisy (a batch of 1 swings by 2x); the recent mean says more
    smoothed = f", mean of the last {recent[1]} logged {recent[0]:.4f}" if recent else ""
    print(f"trained to iteration {result.iteration}{stopped}, last logged loss {loss}{smoothed}")
    print(f"snapshots:   {result.snapshots}")
    if (result.out_dir / "loss.png").is_file():
        print(f"pictures:    {result.out_dir / 'snapshots'}/*.png, {result.out_dir / 'loss.png'}")
        print(f"view:        voltrain view {result.out_dir}")
    print(f"checkpoint:  {result.checkpoint}")
    if result.best_checkpoint:
        print(f"best:        {result.best_checkpoint}")
    print(f"metrics:     {result.out_dir / 'metrics.jsonl'}")
    print(f"tensorboard: {result.out_dir / 'tensorboard'}")


def _recent_mean_loss(metrics: Path, rows: int = 10) -> tuple[float, int] | None:
    """Mean loss of the last ``rows`` rows of metrics.jsonl, and how many there were."""
    if not metrics.is_file():
        return None
    losses = []
    for line in metrics.read_text().splitlines()[-rows:]:
        loss = json.loads(line).get("loss") if line.strip() else None
        if loss is not None:
            losses.append(loss)
    return (sum(losses) / len(losses), len(losses)) if losses else None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        {
            "train": _train,
            "demo": _demo,
            "predict": _predict,
            "predict-worker": _predict_worker,
            "lr-find": _lr_find,
            **CONFIG_COMMANDS,
            **RESULT_COMMANDS,
            "view": _view,
        }[args.command](args)
    except NanLossError as error:
        print(f"voltrain: error: {error}", file=sys.stderr)
        return 1
    except VoltrainError as error:
        print(f"voltrain: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except KeyboardInterrupt:
        print("voltrain: interrupted", file=sys.stderr)
        return 130
    return 0
