"""A district of ten million components: no class outgrows its 6-digit GB/T 30428 serials, and the
mix of smaller districts is untouched (the same seed gives the same bytes as before)."""

import numpy as np
import pytest

from etl.sample.components import DEFAULT_WEIGHT, SERIAL_LIMIT, WEIGHTS, _shares
from layers.codes import component_classes

WEIGHT = np.array([WEIGHTS.get(c.minor_name, DEFAULT_WEIGHT) for c in component_classes()])


@pytest.mark.parametrize("total", [20_000, 1_000_000])
def test_small_districts_keep_their_mix(total):
    assert np.array_equal(_shares(WEIGHT.copy(), total), WEIGHT / WEIGHT.sum())


@pytest.mark.parametrize("total", [10_000_000, 40_000_000])
def test_large_districts_cap_the_common_classes(total):
    shares = _shares(WEIGHT.copy(), total)
    assert shares.sum() == pytest.approx(1.0)
    assert (shares * total).max() <= 0.95 * SERIAL_LIMIT + 1e-6
    # the order of the classes by frequency is kept where no cap bites
    free = shares * total < 0.95 * SERIAL_LIMIT - 1
    assert np.all(np.diff(shares[free][np.argsort(WEIGHT[free])]) >= -1e-15)


def test_more_components_than_the_serials_hold_is_refused():
    with pytest.raises(ValueError, match="6-digit serials"):
        _shares(WEIGHT.copy(), SERIAL_LIMIT * len(WEIGHT))
