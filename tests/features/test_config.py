"""Extraction settings (usher2.features.config): bad values are named."""

from __future__ import annotations

import pytest

from usher2.features.config import ExtractConfig
from usher2.io.errors import InputError


def test_bad_settings_are_named():
    with pytest.raises(InputError, match="masks"):
        ExtractConfig(masks="drawn")
    with pytest.raises(InputError, match="binWidth"):
        ExtractConfig(params={"setting": {}})
    with pytest.raises(InputError, match="neither"):
        ExtractConfig(radiomics=False, backbones=())
