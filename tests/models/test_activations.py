from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import is_writeable_array

from nntk_array.models.activations import ACTIVATIONS
from nntk_array.testing import to_numpy

VALUES = [-2.0, -0.5, 0.0, 0.5, 3.0]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("reuse", [False, True])
def test_apply_is_fn_and_reuses_only_what_it_may(name, reuse, xp, make):
    act = ACTIVATIONS[name]
    z = make(VALUES)
    expected = to_numpy(act.fn(xp, make(VALUES)))
    got = act.apply(xp, z, reuse=reuse)
    np.testing.assert_array_equal(to_numpy(got), expected)
    if reuse and act.fn_into is not None and is_writeable_array(z):
        assert got is z  # written in place
    else:  # the argument is left as it was
        np.testing.assert_array_equal(to_numpy(z), np.asarray(VALUES, dtype=expected.dtype))
