"""Random noise on raw intensities: gaussian, poisson (shot) or salt-and-pepper."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import gunpowder as gp
import numpy as np

from voltrain.errors import ConfigError
from voltrain.kernels.counter_rng import add_noise
from voltrain.nodes.raw_intensity_augment import RawIntensityAugment

# this augment's random stream (see voltrain.kernels.augment_rng)
RNG_STREAM = "noise"

NoiseMode = Literal["gaussian", "poisson", "s&p"]
NOISE_MODES: tuple[str, ...] = ("gaussian", "poisson", "s&p")


@dataclass(frozen=True)
class NoiseParams:
    """The random draw of one ``NoiseAugment`` application.

    ``noise_seed`` seeds the noise field itself, so applying the same params twice gives
    the same noise.
    """

    apply: bool
    noise_seed: int


class NoiseAugment(RawIntensityAugment):
    """Add random noise to the raw intensities. Only raw changes.

    Modes:
        ``"gaussian"``: ``raw + N(0, var)``, the same noise level everywhere.
        ``"poisson"``: shot noise. Raw in [0, 1] is read as a fraction of a peak of
            ``1 / var`` photons, so the noise variance is ``raw * var``: ``var`` is the
            variance at raw = 1 and dark voxels are less noisy. The Poisson draw is
            approximated by a gaussian of that variance, ``raw + sqrt(raw * var) * N(0, 1)``,
            which is accurate for ``raw / var >= ~10`` photons and five times faster than
            exact Poisson sampling. Negative raw counts as 0 photons (no noise).
        ``"s&p"``: salt-and-pepper: a fraction ``amount`` of the voxels, chosen at random,
            is set to 0 (pepper) or 1 (salt) with equal probability.

    The noise is drawn per voxel from a counter-based generator (``counter_rng``): about
    2 ns a voxel, and the same values whether this node adds it or the fused augment does.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        mode: ``"gaussian"``, ``"poisson"`` or ``"s&p"``.
        var: noise variance for ``"gaussian"``; variance at raw = 1 for ``"poisson"``.
        amount: fraction of voxels replaced for ``"s&p"``.
        clip: clip the result to [0, 1].
        p: probability of applying the augment to a sample.
    """

    rng_stream = RNG_STREAM
    float_dtypes = (np.float32, np.float64)

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        mode: NoiseMode = "gaussian",
        var: float = 0.01,
        amount: float = 0.05,
        clip: bool = True,
        p: float = 1.0,
    ):
        if mode not in NOISE_MODES:
            raise ConfigError(f"mode must be one of {', '.join(NOISE_MODES)}, got '{mode}'")
        if var < 0.0:
            raise ConfigError(f"var must be >= 0, got {var}")
        if not 0.0 <= amount <= 1.0:
            raise ConfigError(f"amount must be in [0, 1], got {amount}")
        if (var == 0.0 and mode != "s&p") or (amount == 0.0 and mode == "s&p"):
            warnings.warn(f"NoiseAugment in mode '{mode}' adds no noise", stacklevel=2)
        super().__init__(raw_key, p)
        self.mode = mode
        self.var = var
        self.amount = amount
        self.clip = clip

    def make_params(self, rng: np.random.Generator) -> NoiseParams:
        """Draw whether to apply the noise, and the seed of the noise field."""
        apply = bool(rng.random() < self.p)
        noise_seed = int(rng.integers(2**63))
        return NoiseParams(apply=apply, noise_seed=noise_seed)

    def apply_transform(self, data: np.ndarray, params: NoiseParams) -> np.ndarray:
        """Return a noisy copy of ``data`` in its dtype (``data`` itself is not changed).

        Voxel ``n`` (C order) gets the noise ``counter_rng`` draws for ``(noise_seed, n)``,
        the same the fused augment adds while it resamples.
        """
        return add_noise(data, params.noise_seed, self.mode, self.var, self.amount, self.clip)
