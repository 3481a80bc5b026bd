"""A prediction worker: build the model and the gunpowder graph once, then predict block
after block handed out by the daisy server.

Graph: ``voltrain.inference.inference_graph`` (raw, zeros outside the input -> normalise
-> fixed intensity maps -> network).

Every block's prediction is written to the output array and then marked done; a block
that raises is marked failed (the server retries it) and its error recorded, and the
worker goes on with the next block rather than reloading the model.
"""

from __future__ import annotations

import logging
import os

import gunpowder as gp
import torch
from funlib.geometry import Roi

from voltrain.blocks.serve import serve_blocks
from voltrain.inference import InputConfig, IntensityMap, inference_graph, resolve_device
from voltrain.io.read import open_source
from voltrain.models import build_model
from voltrain.predict.output import OutputStore
from voltrain.predict.spec import PredictionSpec
from voltrain.run.checkpoint import load_checkpoint, load_model_state

logger = logging.getLogger(__name__)

RAW = gp.ArrayKey("RAW")
PREDICTION = gp.ArrayKey("PREDICTION")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class BlockPredictor:
    """The model and graph of one worker; ``predict_block`` writes one block's output.

    Args:
        spec: the checked prediction job.
        device: where the model runs.
    """

    def __init__(self, spec: PredictionSpec, device: torch.device):
        self.spec = spec
        self.device = device
        self.store = OutputStore(spec.output)
        task = spec.task.build()
        state = load_checkpoint(spec.checkpoint)
        model = build_model(spec.model, spec.input_channels, task.num_channels)
        load_model_state(model, state, spec.checkpoint, spec.weights)
        self.model = model.to(device).eval()
        input_config = InputConfig(
            normalize_factor=spec.normalize_factor,
            intensity_maps=[IntensityMap(scale=a, shift=b) for a, b in spec.intensity_maps],
        )
        self.pipeline = inference_graph(
            open_source(spec.input, "input"),
            RAW,
            PREDICTION,
            self.model,
            input_config,
            spec.context,
            task.activation,
            device,
            output_voxel_size=spec.output_voxel,
        )
        self._build = gp.build(self.pipeline)

    def __enter__(self) -> BlockPredictor:
        self._build.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._build.__exit__(*exc_info)

    def predict(self, write_roi: Roi):
        """The (C, z, y, x) prediction of one block's output ROI."""
        request = gp.BatchRequest()
        request[PREDICTION] = gp.ArraySpec(roi=write_roi)
        return self.pipeline.request_batch(request)[PREDICTION].data

    def predict_block(self, write_roi: Roi) -> None:
        self.store.write_block(write_roi, self.predict(write_roi))


def run_worker(spec: PredictionSpec, context=None) -> None:
    """Predict blocks from the daisy server named by ``context`` (default: DAISY_CONTEXT)."""
    import daisy.v2 as daisy

    context = daisy.Context.from_env() if context is None else context
    worker_id = int(context["worker_id"])
    device = resolve_device(spec.device, worker_id)
    if device.type == "cpu":
        # Several workers on one machine share its cores instead of oversubscribing them.
        torch.set_num_threads(spec.cpu_threads or available_cores())
    client = daisy.Client(context)
    with BlockPredictor(spec, device) as predictor:
        serve_blocks(client, predictor.store.blocks, predictor.predict_block)
