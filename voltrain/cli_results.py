"""The ``voltrain segment`` and ``voltrain evaluate`` commands (results out of a model)."""

from __future__ import annotations

import argparse

from voltrain.errors import ConfigError


def add_results_parsers(commands) -> None:
    segment = commands.add_parser("segment", help="affinities to a segmentation, blockwise")
    segment.add_argument("config", help="experiment YAML (task.neighborhood, segment: ...)")
    segment.add_argument("--input", required=True, help="affinities zarr array (C, z, y, x)")
    segment.add_argument("--output", required=True, help="output zarr group, e.g. seg.zarr/seg")
    add_segment_options(segment)
    segment.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    segment.add_argument("--block-timeout", type=float, default=600.0, help="seconds per block")
    segment.add_argument("--max-retries", type=int, default=2, help="retries of a failed block")
    segment.add_argument("--host", default="127.0.0.1", help="address workers connect to")
    segment.add_argument("--overwrite", action="store_true", help="replace an existing output")
    segment.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="VOI and ARAND of a segmentation vs gt")
    evaluate.add_argument(
        "--segmentation", required=True, help="segmentation array, or a `voltrain segment` group"
    )
    evaluate.add_argument("--gt", required=True, help="ground-truth labels array (0 ignored)")
    evaluate.add_argument("--mask", help="score only where this array is nonzero")
    evaluate.add_argument("--out", help="write the scores to this JSON file")


def add_segment_options(parser) -> None:
    """Options shared by ``segment`` and ``predict --segment``."""
    parser.add_argument("--mask", help="segment only where this array is nonzero")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        help="merge thresholds in [0, 1] (higher merges more)",
    )
    parser.add_argument(
        "--segment-block-shape",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxels per segmentation block (default: segment.block_shape)",
    )


def check_segment_options(args: argparse.Namespace) -> None:
    """Check ``predict --segment``'s options before anything is predicted."""
    from voltrain.experiment import load_config
    from voltrain.predict.output import split_container
    from voltrain.segment.blockwise import experiment_neighborhood
    from voltrain.segment.config import check_thresholds

    experiment_neighborhood(load_config(args.config), args.config)
    if args.thresholds is not None:
        try:
            check_thresholds(args.thresholds)
        except ValueError as error:
            raise ConfigError(f"--thresholds: {error}") from None
    split_container(args.segment, "--segment")


def segment_command(args: argparse.Namespace, input: str, output: str) -> None:
    """Run ``voltrain segment`` with the parsed options and print what it did."""
    from voltrain.blocks.run import BlockRunOptions
    from voltrain.segment.blockwise import segment

    options = BlockRunOptions(
        args.workers, args.block_timeout, args.max_retries, args.host, not args.no_progress
    )
    result = segment(
        args.config,
        input,
        output,
        mask=args.mask,
        thresholds=args.thresholds,
        block_shape=args.segment_block_shape,
        options=options,
        overwrite=args.overwrite,
    )
    if result.seconds:
        print(
            f"segmented {result.voxels} voxels in {result.blocks} blocks: {result.fragments} "
            f"fragments, {result.edges} edges, {result.voxels_per_second:.0f} voxels/s"
        )
    else:
        print(f"segmentation was complete already ({result.blocks} blocks)")
    for threshold, path in result.outputs.items():
        print(f"threshold {threshold:g}: {path}")


def _segment(args: argparse.Namespace) -> None:
    segment_command(args, args.input, args.output)


def _evaluate(args: argparse.Namespace) -> None:
    from voltrain.evaluate import evaluate_files, format_table, write_json

    rows = evaluate_files(args.segmentation, args.gt, args.mask)
    print(format_table(rows))
    if args.out:
        write_json(rows, args.out)
        print(f"scores:      {args.out}")


RESULT_COMMANDS = {"segment": _segment, "evaluate": _evaluate}
