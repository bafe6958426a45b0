"""The method table and the types that name its rows say the same."""

from __future__ import annotations

from typing import get_args

import pytest

from bitfit.methods import BASELINES, METHODS, TABLE, MethodName, known, method
from bitfit.pipeline import ExtraMethod


def test_the_literal_types_name_the_table_s_rows():
    assert set(get_args(MethodName)) == set(METHODS) == set(TABLE)
    assert set(get_args(ExtraMethod)) == set(BASELINES)


def test_an_unknown_name_is_refused_by_method_and_none_to_known():
    with pytest.raises(ValueError, match="^method must be one of bitfit, full, frozen, rand, "
                                         "lora, got 'gpt'$"):
        method("gpt")
    assert known("gpt") is None and known(["bitfit"]) is None
    assert known("lora") is TABLE["lora"] and TABLE["lora"].adds_modules
