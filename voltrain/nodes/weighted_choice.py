"""Choose one of several upstream datasets per request, with given weights."""

from __future__ import annotations

import gunpowder as gp
import numpy as np


class WeightedChoice(gp.BatchProvider):
    """Forward each request to one upstream provider drawn with probability ~ weight.

    The draw uses the request's seed, so it is reproducible. Use as
    ``tuple_of_providers + WeightedChoice(weights)``. All upstream providers must provide
    the same keys; the provided ROIs are those of the first.

    Args:
        weights: one positive weight per upstream provider.
    """

    def __init__(self, weights: list[float]):
        total = float(sum(weights))
        if not weights or any(w <= 0 for w in weights):
            raise ValueError(f"weights must be positive, got {weights}")
        self.probabilities = np.asarray(weights, dtype=np.float64) / total

    def setup(self):
        providers = self.get_upstream_providers()
        if len(providers) != len(self.probabilities):
            raise ValueError(
                f"{len(self.probabilities)} weights for {len(providers)} upstream providers"
            )
        for key, spec in providers[0].spec.items():
            self.provides(key, spec)

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        rng = np.random.default_rng(request.random_seed)
        index = int(rng.choice(len(self.probabilities), p=self.probabilities))
        return self.get_upstream_providers()[index].request_batch(request.copy())
