"""The package's import graph: dependencies run one way, no module imports an
mxopt module inside a function (how a cycle is usually hidden), and no module
uses another's private names.

Every import counts, function-local ones included. Modules meant to be shared
privately are named ``_like_this`` (``_kernels``, ``_engine``, ``_validation``,
``_mxformat``): importing their names is the point of them. Any other
module's underscore names are its own.
"""
import ast
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mxopt"


def _module_name(path):
    return "mxopt" if path.name == "__init__.py" else f"mxopt.{path.stem}"


def _is_private_module(name):
    return name.rsplit(".", 1)[-1].startswith("_") and name != "mxopt"


def _local_imports(tree, me):
    """Imports of mxopt modules inside a function (how a cycle is usually hidden)."""
    out = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for node in ast.walk(func):
                if (isinstance(node, ast.ImportFrom) and node.module
                        and node.module.split(".")[0] == "mxopt") or (
                        isinstance(node, ast.Import)
                        and any(a.name.split(".")[0] == "mxopt" for a in node.names)):
                    out.append(f"{me} imports mxopt inside {getattr(func, 'name', 'lambda')}")
    return out


def _analyse(path):
    """(imported mxopt modules, rule violations) of one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    deps, violations = set(), _local_imports(tree, me)
    aliases = {}  # local name -> mxopt module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "mxopt" or a.name.startswith("mxopt."):
                    deps.add(a.name)
                    aliases[(a.asname or a.name).split(".")[0]] = (
                        a.name if a.asname else "mxopt")
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "mxopt" or node.module.startswith("mxopt.")):
            for a in node.names:
                if node.module == "mxopt":
                    target = f"mxopt.{a.name}"
                    deps.add(target)
                    aliases[a.asname or a.name] = target
                else:
                    deps.add(node.module)
                    if a.name.startswith("_") and not _is_private_module(node.module):
                        violations.append(f"{me} imports {node.module}.{a.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            target = aliases[node.value.id]
            if not _is_private_module(target):
                violations.append(f"{me} uses {target}.{node.attr}")
    deps.discard(me)
    return deps, violations


def _graph():
    return {_module_name(p): _analyse(p) for p in sorted(PACKAGE.glob("*.py"))}


def _cycle(graph):
    """A list of modules forming an import cycle, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "active"
        for dep in sorted(graph.get(node, ())):
            if dep == "mxopt" and node != "mxopt":
                return stack + [node, dep]  # a submodule importing the package itself
            if state.get(dep) == "active":
                return stack[stack.index(dep):] + [node, dep] if dep in stack else [node, dep]
            if dep not in state and dep in graph:
                found = visit(dep, stack + [node])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_import_graph_has_no_cycle():
    deps = {name: d for name, (d, _) in _graph().items() if name != "mxopt"}
    assert _cycle(deps) is None, " -> ".join(_cycle(deps))


def test_no_private_names_across_modules_and_no_local_imports():
    violations = [v for _, (_, vs) in _graph().items() for v in vs]
    assert not violations, violations


@pytest.mark.parametrize("upstream, downstream", [
    ("mxopt._kernels", "mxopt._engine"),
    ("mxopt._engine", "mxopt.transforms"),
    ("mxopt.transforms", "mxopt.alias"),
    ("mxopt.alias", "mxopt.facade"),
    ("mxopt.interop", "mxopt.facade"),
    ("mxopt.facade", "mxopt.interop"),
    ("mxopt._mxformat", "mxopt.interop"),
])
def test_layers_depend_downward_only(upstream, downstream):
    # MXNet's arithmetic knows nothing of trees; the engine nothing of any one
    # optimizer; the class API sits on top of everything.
    graph = {name: d for name, (d, _) in _graph().items()}
    reach, todo = set(), [upstream]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in reach:
                reach.add(dep)
                todo.append(dep)
    assert downstream not in reach, f"{upstream} depends on {downstream}"


def test_mxformat_stands_alone():
    # NumPy only: the golden scripts in tools/ load it beside real MXNet.
    assert _graph()["mxopt._mxformat"][0] == set()


def test_the_checks_see_what_they_should(tmp_path, monkeypatch):
    # The analysis itself can fail: a private name used across modules, a
    # local import closing a cycle.
    (tmp_path / "a.py").write_text("from mxopt import b\nb._secret()\n")
    (tmp_path / "e.py").write_text("def g():\n    import mxopt.a\n")
    (tmp_path / "b.py").write_text("def f():\n    from mxopt import a\n")
    (tmp_path / "_c.py").write_text("x = 1\n")
    (tmp_path / "d.py").write_text("from mxopt._c import x\nfrom mxopt import _c\n_c._y\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    graph = _graph()
    assert graph["mxopt.a"][1] == ["mxopt.a uses mxopt.b._secret"]
    assert graph["mxopt.b"][1] == ["mxopt.b imports mxopt inside f"]
    assert graph["mxopt.d"][1] == []
    assert graph["mxopt.e"][1] == ["mxopt.e imports mxopt inside g"]
    deps = {name: d for name, (d, _) in graph.items()}
    assert set(_cycle(deps)) == {"mxopt.a", "mxopt.b"}
