"""The shared CPU layout of the zone and run classes (usher2.features.torchrad._zones)."""

from __future__ import annotations

import pytest
import torch

from usher2.features.torchrad import gldm, glrlm, glszm, ngtdm


@pytest.mark.parametrize("module", [glrlm, glszm, gldm, ngtdm], ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_many_levels_take_the_uint16_layout(module):
    # levels over 255 switch the CPU layout from uint8 to uint16; the torch path has no such switch. Both paths
    # sum the same float64 terms in another order: 1e-12 relative
    rng = torch.Generator().manual_seed(2)
    b = torch.randint(1, 4, (2, 9, 11), generator=rng) * 150 * (torch.rand(2, 9, 11, generator=rng) > 0.2)
    fast, slow = module.compute(b), module.compute(b, backend="torch")
    for feat in module.FEATURES:
        torch.testing.assert_close(slow[feat], fast[feat], rtol=1e-12, atol=1e-12)
