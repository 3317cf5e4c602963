"""The examples in the docstrings run and print what they say (doctest),
on whichever fastconv is installed."""

import doctest
import importlib

import numpy as np
import pytest

MODULES = ["fastconv.functional", "fastconv.grad", "fastconv.reference", "fastconv.nn",
           "fastconv.optim", "fastconv._plan", "fastconv.models"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    if name in ("fastconv.functional", "fastconv.nn"):
        assert result.attempted > 0, f"{name} has no examples"
