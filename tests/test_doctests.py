"""The ``>>>`` examples in the aliases' docstrings run and print what they say."""
import doctest

import mxopt.alias


def test_alias_docstring_examples():
    result = doctest.testmod(mxopt.alias, optionflags=doctest.NORMALIZE_WHITESPACE,
                             verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
