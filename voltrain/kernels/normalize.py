"""How stored raw becomes float: the one rule for the factor raw is multiplied by."""

from __future__ import annotations

import numpy as np

from voltrain.errors import ConfigError


def normalize_factor_for(dtype, factor: float | None) -> float:
    """The factor raw of ``dtype`` is multiplied by; ``ConfigError`` when there is none."""
    if factor is not None:
        return float(factor)
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 1.0 / 255
    if dtype == np.uint16:
        return 1.0 / 65535
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ConfigError(
        f"raw has dtype {dtype}, which has no automatic normalisation; set input.normalize_factor"
    )
