"""The documentation site builds offline with every warning an error, and its API
pages document every public name (issue 18 item 7).

One Sphinx build per session (about 7 s here); the checks read its output.
"""
import ast
import html
import os
import re
import subprocess
import sys
import zlib

import pytest

import mxopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The submodules whose __all__ the API pages cover as well.
SUBMODULES = ["transforms", "precision", "lr_scheduler", "multipliers", "interop", "reference"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the HTML as README's command does: -W (warnings are errors), -n
    (nitpicky: every mxopt reference resolves), --keep-going (report them all)."""
    out = tmp_path_factory.mktemp("docs_html")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), os.path.join(ROOT, "docs"), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the docs build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def documented_objects(site):
    """Python objects in the build's inventory (``objects.inv``: four header
    lines, then zlib-compressed ``name domain:role priority uri dispname`` lines),
    as ``{name: page}``."""
    with open(site / "objects.inv", "rb") as f:
        for _ in range(4):
            f.readline()
        body = zlib.decompress(f.read()).decode()
    objects = {}
    for line in body.splitlines():
        name, role, _priority, uri = line.split(" ", 4)[:4]
        if role.startswith("py:"):
            objects[name] = uri.split("#", 1)[0]
    return objects


def test_every_public_name_is_in_the_api_pages(site):
    objects = documented_objects(site)
    missing = []
    for name in mxopt.__all__:
        page = objects.get(f"mxopt.{name}", "")
        if not page.startswith("api/"):
            missing.append(f"mxopt.{name}")
    for module in SUBMODULES:
        for name in getattr(mxopt, module).__all__:
            # Re-exported names (mxopt.scale_by_rms) are documented once, at the top.
            if f"mxopt.{module}.{name}" not in objects and not (
                    name in mxopt.__all__ and f"mxopt.{name}" in objects):
                missing.append(f"mxopt.{module}.{name}")
    assert not missing, (f"not in docs/api/*.rst: {missing}; add an autofunction/autoclass "
                         f"entry (or automodule :members:) for each")


def test_formulas_render_as_literal_blocks(site):
    # Napoleon keeps the docstrings' ``::`` blocks: Adam's formula is preformatted.
    with open(site / "api" / "optimizers.html") as f:
        page = f.read()
    start = page.index('id="mxopt.adam"')
    assert "<pre>" in page[start:page.index('id="mxopt.AdamState"')]


@pytest.mark.parametrize("page, text", [
    ("porting", "nearest optax / torch, and how they differ"),  # the README's family table
    ("numerics", "Non-finite values propagate as in MXNet"),
    ("performance", "How to run"),  # BENCHMARKS.md
])
def test_included_sections_are_in_the_site(site, page, text):
    with open(site / f"{page}.html") as f:
        assert text in f.read()


def test_the_readme_gives_the_build_command():
    # The flags the fixture builds with, so a local build fails as CI's does.
    command = ".venv/bin/python -m sphinx -W --keep-going -n -b html docs docs/_build/html"
    for path in ("README.md", os.path.join("docs", "about.md")):
        with open(os.path.join(ROOT, path)) as f:
            assert command in f.read(), path


def test_the_pages_hold_no_untested_python(site):
    # The docstrings' examples are doctests (tests/test_doctests.py) and their
    # formulas Python-like pseudocode, both on the api/ pages; a block on the
    # other pages that parses as Python would be an example no test runs. The
    # performance page's blocks are shell commands and benchmark listings.
    pages = [name for name in os.listdir(site) if name.endswith(".html")]
    python = []
    for name in pages:
        with open(site / name) as f:
            blocks = re.findall(r"<pre>(.*?)</pre>", f.read(), re.S)
        for block in blocks:
            code = html.unescape(re.sub(r"<[^>]+>", "", block))
            try:
                ast.parse(code)
            except SyntaxError:
                continue
            python.append(f"{name}: {code[:60]!r}")
    assert not python, f"Python examples on the site that no test runs: {python}"
