"""Sphinx configuration of mxopt's documentation (build: see ``docs/about.md``).

Offline by design: no intersphinx, no theme or extension beyond Sphinx's own and
MyST (which includes the README's and BENCHMARKS.md's sections instead of copying them).
"""
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)  # document this checkout's mxopt, not an installed copy

import mxopt  # noqa: E402

project = "mxopt"
author = "the mxopt authors"
copyright = "the mxopt authors, Apache-2.0"
version = release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # mxopt's docstrings are Google style (Args:, Returns:)
    "myst_parser",  # the pages are Markdown and include README.md / BENCHMARKS.md
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": mxopt.__doc__.split(": ", 1)[1], "fixed_sidebar": True}

# Docstrings use reST double-backtick literals, so a single-backtick `x` would be
# a cross-reference; napoleon's Args/Returns become Sphinx's field lists.
default_role = None
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
# Signatures carry the annotations; repeating them in the text adds nothing.
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # show `learning_rate=0.001`, not a float repr
# mxopt's annotations are strings (``from __future__ import annotations``):
# keep its type aliases as names instead of expanding their unions; the API
# index says what each stands for.
TYPE_ALIASES = ["Scalar", "ScalarOrSchedule", "MultiplierSpec", "PathLike", "Index", "Hyper"]
autodoc_type_aliases = {name: name for name in TYPE_ALIASES}
autodoc_type_aliases["multipliers.MultiplierSpec"] = "MultiplierSpec"

# Every reference to mxopt itself must resolve (nitpicky); names from jax,
# optax, numpy and the standard library stay plain text, as there is no
# intersphinx (the build must work offline).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|optax|chex|numpy|np|jnp|flax|nnx|haiku|orbax|typing|"
               r"collections|os|io|pathlib|types|enum|builtins)(\..*)?"),
    (r"py:.*", r"(Any|Optional|Union|Callable|Sequence|Mapping|Iterable|Iterator|"
               r"NamedTuple|Literal|Tuple|Dict|List|PathLike|BinaryIO|ArrayLike|"
               r"int|float|bool|str|bytes|dict|list|tuple|object|type|None)"),
    (r"py:.*", "|".join(TYPE_ALIASES)),
]

myst_heading_anchors = 3


def _plain_aliases(app, what, name, obj, options, signature, return_annotation):
    """Sphinx prints an alias inside ``Optional[...]`` as ``TypeAliasForwardRef('Scalar')``;
    print its name, as it does elsewhere."""
    def fix(text):
        return None if text is None else re.sub(r"TypeAliasForwardRef\('(\w+)'\)", r"\1", text)
    return fix(signature), fix(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _plain_aliases)
