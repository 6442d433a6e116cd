"""The examples in mxopt's docstrings run, and print what they say."""
import doctest

import pytest

import mxopt.alias

MODULES = [mxopt.alias]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0, f"{result.failed} failing example(s) in {module.__name__}"
