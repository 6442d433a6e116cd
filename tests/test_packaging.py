"""Packaging metadata: the license is declared as an SPDX expression and shipped."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_license_is_spdx_and_shipped():
    # Read as text: tomllib is not in Python 3.10, which mxopt supports.
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)  # not the old table
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)
    # setuptools reads SPDX strings and license-files from version 77.
    assert re.search(r'^requires = \["setuptools>=77"\]', pyproject, re.M)
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert " ".join(text.split()[:5]) == "Apache License Version 2.0, January"
    assert "END OF TERMS AND CONDITIONS" in text
