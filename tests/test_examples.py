"""The README's commands and the demo stay true."""
import os
import re
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
    with open(path) as f:
        return f.read()


def test_ci_runs_the_readme_test_command():
    readme = _read(os.path.join(ROOT, "README.md"))
    commands = re.findall(r"^    (python3 -m venv .*)$", readme, flags=re.M)
    test_cmd = [c for c in commands if "pytest" in c]
    assert len(test_cmd) == 1
    ci = _read(os.path.join(ROOT, ".ci", "run"))
    assert test_cmd[0] in ci.splitlines()


def test_demo_trains(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["demo.py", "--steps", "150", "--centered"])
    runpy.run_path(os.path.join(ROOT, "examples", "demo.py"), run_name="__main__")
    out = capsys.readouterr().out
    first, last = re.search(r"loss (\S+) -> (\S+)", out).groups()
    assert float(last) < 0.2 * float(first)


def test_every_example_help_is_complete(capsys, monkeypatch):
    # --help shows the script's whole docstring, not a sentence cut at its first line.
    import ast

    import pytest

    monkeypatch.syspath_prepend(os.path.join(ROOT, "examples"))
    checked = 0
    for name in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        path = os.path.join(ROOT, "examples", name)
        source = _read(path)
        if not name.endswith(".py") or name == "digits_data.py" or not (
                "argparse" in source or "parse_example_args" in source):
            continue
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(path, run_name="__main__")
        assert exit_info.value.code == 0, name
        out = " ".join(capsys.readouterr().out.split())
        doc = " ".join(ast.get_docstring(ast.parse(source), clean=False).split())
        assert doc in out, name
        checked += 1
    assert checked == 6
