"""Re-draw samples whose output region, after augmentation, is not masked enough."""

from __future__ import annotations

import gunpowder as gp
import numpy as np

from voltrain.errors import SamplingError
from voltrain.seeding import derive_seed


class MinMaskedReject(gp.BatchFilter):
    """Guarantee that the masked fraction of each sample's output region is >= min_masked.

    Placed last in the graph, after the augments and the target node, it judges the mask
    exactly as the loss will see it: the augmented mask over the requested output ROI. A
    sample that falls short is drawn again with a new seed derived from the request's seed
    and the attempt number, so every attempt differs (gunpowder's ``Reject`` repeats a
    seeded request and loops forever) and the result stays reproducible. After
    ``max_attempts`` a ``SamplingError`` says so.

    Args:
        mask_key: the mask array; its requested ROI is the output region.
        min_masked: the minimum masked fraction, inclusive.
        max_attempts: how many samples to draw before giving up.
        description: names the data in the error message (e.g. the dataset names).
    """

    def __init__(
        self,
        mask_key: gp.ArrayKey,
        min_masked: float,
        max_attempts: int = 100,
        description: str = "training data",
    ):
        self.mask_key = mask_key
        self.min_masked = min_masked
        self.max_attempts = max_attempts
        self.description = description

    def setup(self):
        pass

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        seed = request.random_seed
        best = 0.0
        for attempt in range(self.max_attempts):
            upstream_request = request.copy()
            upstream_request._random_seed = derive_seed(seed, attempt)
            batch = self.get_upstream_provider().request_batch(upstream_request)
            fraction = self.masked_fraction(batch[self.mask_key].crop(request[self.mask_key].roi))
            if fraction >= self.min_masked:
                return batch
            best = max(best, fraction)
        raise SamplingError(
            f"{self.description}: no sample reached min_masked={self.min_masked:g} on its "
            f"output region after augmentation in {self.max_attempts} attempts (best "
            f"{best:.3f}); lower min_masked or weaken the spatial augments"
        )

    @staticmethod
    def masked_fraction(mask: gp.Array) -> float:
        """Fraction of nonzero voxels of ``mask``."""
        return float(np.count_nonzero(mask.data)) / mask.data.size
