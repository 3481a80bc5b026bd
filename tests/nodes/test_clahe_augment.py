"""ClaheAugment: local contrast equalisation per section or in 3D, raw's range kept."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.section_pipeline import RAW, assert_labels_kept, run
from voltrain.nodes.clahe_augment import ClaheAugment


def dull_and_crisp(shape=(4, 64, 64)) -> np.ndarray:
    """Left half: texture over [0, 1]; right half: the same texture squeezed into
    [0.45, 0.55], a low-contrast region."""
    texture = np.random.default_rng(5).random(shape, dtype=np.float32)
    data = texture.copy()
    half = shape[-1] // 2
    data[..., half:] = 0.45 + 0.1 * texture[..., half:]
    return data


@pytest.mark.parametrize("per_section", [True, False])
def test_clahe_raises_the_contrast_of_a_low_contrast_region_only(per_section):
    data = dull_and_crisp()
    node = ClaheAugment(
        RAW, kernel_size=16.0, clip_limit_min=0.05, clip_limit_max=0.05, per_section=per_section
    )
    (batch,) = run(node, [0], data)
    out = batch[RAW].data
    dull = (Ellipsis, slice(None), slice(40, 64))  # clear of the crisp half's kernels
    assert out[dull].std() > 3 * data[dull].std()
    crisp = (Ellipsis, slice(None), slice(0, 24))
    assert out[crisp].std() == pytest.approx(data[crisp].std(), rel=0.2)
    # the value range is the input's (sections', in 2D), never wider
    assert out.min() >= data.min() and out.max() <= data.max()
    assert_labels_kept(batch, data)


def test_clahe_leaves_undrawn_and_flat_sections_as_they_are():
    data = dull_and_crisp((8, 32, 32))
    data[3] = 0.5
    node = ClaheAugment(RAW, section_probability=0.5)
    (batch,) = run(node, [1], data)
    out = batch[RAW].data
    changed = [z for z in range(8) if not np.array_equal(out[z], data[z])]
    assert changed == [z for z in node._params.sections if z != 3] and changed


def test_clahe_kernel_size_is_in_world_units():
    node = ClaheAugment(RAW, kernel_size=64.0)
    run(node, [0], dull_and_crisp((4, 32, 32)), (40, 4, 4))
    assert node._params.kernel == (16, 16)
    node_3d = ClaheAugment(RAW, kernel_size=[80.0, 64.0, 32.0], per_section=False)
    run(node_3d, [0], dull_and_crisp((4, 32, 32)), (40, 4, 4))
    assert node_3d._params.kernel == (2, 16, 8)


def test_clahe_same_seed_replays_and_p_zero_does_nothing():
    data = dull_and_crisp((4, 32, 32))
    node = ClaheAugment(RAW, clip_limit_min=0.01, clip_limit_max=0.5)
    first, again, other = run(node, [3, 3, 4], data)
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)
    for batch in run(ClaheAugment(RAW, p=0.0), range(3), data):
        np.testing.assert_array_equal(batch[RAW].data, data)
