"""Each compiled kernel module's .pyi stub lists exactly its public entry
points, with their parameters in order."""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from fastconv._kernels import __file__ as _kernels_init

KERNELS = Path(_kernels_init).parent
MODULES = [f"_{kind}_{isa}" for kind in ("conv", "pool", "norm")
           for isa in ("generic", "avx2", "avx512")]


def _stub_signatures(name):
    """{function: [parameter names]} of a stub, following its star imports."""
    tree = ast.parse((KERNELS / f"{name}.pyi").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            found.update(_stub_signatures(node.module))
        elif isinstance(node, ast.FunctionDef):
            found[node.name] = [a.arg for a in node.args.args]
    return found


@pytest.mark.parametrize("name", MODULES + ["_openmp"])
def test_stub_matches_compiled_module(name):
    try:
        module = importlib.import_module(f"fastconv._kernels.{name}")
    except ImportError:
        pytest.skip(f"{name} is not built on this platform")
    compiled = {
        n: list(inspect.signature(f).parameters)
        for n, f in vars(module).items()
        if callable(f) and not n.startswith("_") and getattr(f, "__module__", None) == module.__name__
    }
    assert compiled, f"no entry points found in {name}"
    assert _stub_signatures(name) == compiled
