"""The type stubs and docstrings stay true to the compiled module.

`python/hail/_hail.pyi` must declare every public name of `hail._hail` and every public
member of its classes, and nothing the module lacks; every public class, method and
property must have a docstring. With mypy installed, `stubtest` checks the signatures too.
"""

import ast
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import hail
import hail._hail as compiled

STUB = Path(hail.__file__).with_name("_hail.pyi")


def stub_tree():
    tree = ast.parse(STUB.read_text())
    names, classes = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            classes[node.name] = members
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") or n in ("__version__",)}, classes


def public(names):
    return {n for n in names if not n.startswith("_")}


def test_the_stub_declares_exactly_the_module_names():
    names, _ = stub_tree()
    runtime = public(dir(compiled)) | {"__version__"}
    assert names == runtime
    assert set(hail.__all__) == runtime


def test_the_stub_declares_exactly_each_class_members():
    _, classes = stub_tree()
    for name, members in classes.items():
        cls = getattr(compiled, name)
        # Members a class defines itself (exceptions inherit `args` etc. from Exception).
        own = public(vars(cls))
        if cls is not compiled.HailError and issubclass(cls, compiled.HailError):
            own -= {"kind"}  # set on each class, declared once on HailError
        assert public(members) == own, name


def test_every_public_class_method_and_property_has_a_docstring():
    missing = []
    for name in hail.__all__:
        obj = getattr(hail, name)
        if not inspect.isclass(obj):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        for member, value in vars(obj).items():
            if member.startswith("_") and member not in ("__new__", "__aenter__", "__enter__"):
                continue
            if member == "kind" or isinstance(value, str):
                continue  # class attributes: documented on the class
            if not (getattr(value, "__doc__", None) or "").strip():
                missing.append(f"{name}.{member}")
    assert missing == []


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_stubtest_finds_the_signatures_true():
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "hail._hail"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr
