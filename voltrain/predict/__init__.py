"""Blockwise prediction of a trained network over a zarr volume (``voltrain predict``).

Exports are loaded on first use: daisy's worker processes import
``voltrain.predict.launch`` and must not pay for torch when they only start a remote worker.
"""

from importlib import import_module

_EXPORTS = {
    "BlocksFailedError": "voltrain.predict.blockwise",
    "PredictionResult": "voltrain.predict.blockwise",
    "predict": "voltrain.predict.blockwise",
    "OutputStore": "voltrain.predict.output",
    "PredictionSpec": "voltrain.predict.spec",
    "parse_roi": "voltrain.predict.spec",
    "run_worker": "voltrain.predict.worker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'voltrain.predict' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
