"""The examples in the docstrings run and print what they say (doctest),
on whichever fastconv is installed; every public name is documented with an
example; the documentation site's sources are complete (docs/, built by
docs/build.sh in CI)."""

import doctest
import importlib
import inspect
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import fastconv

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: The public modules: every name in their ``__all__`` is public. Optional
#: modules (``fastconv.dask`` needs dask) count when they import.
PUBLIC = ["fastconv", "fastconv.grad", "fastconv.nn", "fastconv.optim", "fastconv.reference"]
OPTIONAL = ["fastconv.dask"]


def _public_modules():
    modules = [importlib.import_module(name) for name in PUBLIC]
    for name in OPTIONAL:
        try:
            module = importlib.import_module(name)
            for attr in module.__all__:  # fastconv.dask imports, but needs dask for its names
                getattr(module, attr)
        except ImportError:
            continue
        modules.append(module)
    # sub-modules that fastconv.__all__ exports (a new one is public too)
    for name in fastconv.__all__:
        obj = getattr(fastconv, name)
        if isinstance(obj, types.ModuleType) and obj not in modules:
            modules.append(obj)
    return modules


def _public_objects():
    """``[(qualified name, object)]`` of every public function and class."""
    out = []
    for module in _public_modules():
        assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
        for name in module.__all__:
            obj = getattr(module, name)
            if name.startswith("__") or isinstance(obj, (types.ModuleType,
                                                           types.SimpleNamespace)):
                continue
            out.append((f"{module.__name__}.{name}", obj))
    return out


def _doctest_modules():
    """The modules whose doctests run: the public ones, plus every module that
    defines a public object (``fastconv.conv2d`` lives in ``functional``)."""
    names = {m.__name__ for m in _public_modules()} | {"fastconv._plan"}
    names |= {obj.__module__ for _, obj in _public_objects()}
    return sorted(names)


PUBLIC_OBJECTS = _public_objects()
_EXAMPLES = re.compile(r"^Examples\n-{8,}\n", re.M)
_SHAPE = re.compile(r"^Shape\n-{5,}\n", re.M)


@pytest.mark.parametrize("name", _doctest_modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
    if name in ("fastconv.functional", "fastconv.nn"):
        assert result.attempted > 0, f"{name} has no examples"


@pytest.mark.parametrize("name, obj", PUBLIC_OBJECTS, ids=[n for n, _ in PUBLIC_OBJECTS])
def test_public_name_has_docstring_with_example(name, obj):
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{name} has no docstring"
    assert _EXAMPLES.search(doc), f"{name}'s docstring has no 'Examples' section"
    examples = doc[_EXAMPLES.search(doc).end():]
    assert ">>>" in examples, f"{name}'s Examples section has no doctest (>>>)"


@pytest.mark.parametrize("name, obj", PUBLIC_OBJECTS, ids=[n for n, _ in PUBLIC_OBJECTS])
def test_public_example_runs(name, obj):
    """Each public object's own examples, run in isolation (a name exported by
    several modules is checked where users find it)."""
    finder = doctest.DocTestFinder(recurse=False)
    tests = finder.find(obj, name, globs={})
    assert tests and tests[0].examples, f"{name} has no doctest examples"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    with np.printoptions(legacy=False):
        for test in tests:
            runner.run(test)
    assert runner.failures == 0, f"{runner.failures} example(s) of {name} failed"


# Ops with an output-size formula: their docstring has a Shape section.
_SHAPED = re.compile(r"(conv|pool)")


@pytest.mark.parametrize("name, obj", [(n, o) for n, o in PUBLIC_OBJECTS
                                       if _SHAPED.search(n.rsplit(".", 1)[1].lower())
                                       and not n.startswith("fastconv.conv_plan")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_ops_have_a_shape_section(name, obj):
    doc = inspect.getdoc(obj)
    assert _SHAPE.search(doc), f"{name}'s docstring has no 'Shape' section"
    section = doc[_SHAPE.search(doc).end():]
    section = re.split(r"^\w+\n-{3,}\n", section, flags=re.M)[0]
    assert re.search(r"=|->|\(N, |_size", section), (
        f"{name}'s Shape section gives no output shape or size formula")


# -- the site's sources -----------------------------------------------------------

GUIDE = ["scanning", "conventions", "gradients", "training", "threads", "performance",
         "building", "internals"]
GALLERY = ["plot_digits_filters", "plot_maxpool_switches", "plot_mnist1d_shift",
           "plot_benchmark_ratios", "plot_gradient_check"]

needs_docs = pytest.mark.skipif(not (DOCS / "conf.py").exists(),
                                reason="no docs/ here (installed package)")


@pytest.fixture(scope="module")
def conf():
    """docs/conf.py as a module (it writes docs/api/*.rst, which is generated)."""
    sys.path.insert(0, str(DOCS))
    try:
        spec = importlib.util.spec_from_file_location("fastconv_docs_conf", DOCS / "conf.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(DOCS))
    return module


@needs_docs
def test_api_pages_list_every_public_name(conf):
    """The API pages come from each module's __all__: none is left out."""
    pages = {p.stem: p.read_text() for p in (DOCS / "api").glob("fastconv*.rst")}
    for name, _ in PUBLIC_OBJECTS:
        module, short = name.rsplit(".", 1)
        assert module in pages, f"no API page for {module}"
        assert re.search(rf"^   {re.escape(short)}$", pages[module], re.M), (
            f"{name} is missing from docs/api/{module}.rst")


@needs_docs
def test_guide_and_gallery_sources_exist(conf):
    for page in GUIDE:
        assert (DOCS / "guide" / f"{page}.rst").exists(), page
        assert page in conf.guide_pages()
    for name in GALLERY:
        source = (DOCS / "examples" / f"{name}.py").read_text()
        assert source.startswith('"""'), f"{name}: sphinx-gallery needs a docstring title"
        assert "plt.show()" in source or "savefig" in source, f"{name} draws no picture"


@needs_docs
def test_guide_toctree_lists_only_pages_that_exist(conf):
    """deploy and dask join the guide when their pages land, not before."""
    for page in conf.guide_pages():
        assert (DOCS / "guide" / f"{page}.rst").exists(), page


# -- the README ---------------------------------------------------------------------

README = DOCS.parent / "README.md"


@pytest.mark.skipif(not README.exists(), reason="no README here (installed package)")
def test_readme_example_prints_what_it_says(capsys):
    """The README's Python example runs, and prints the shapes its last
    comment gives."""
    text = README.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert blocks, "README.md has no ```python example"
    code = blocks[0]
    expected = code.rstrip().splitlines()[-1].split("#", 1)[1].strip()
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == expected


@pytest.mark.skipif(not README.exists(), reason="no README here (installed package)")
def test_readme_links_into_the_docs_exist():
    for target in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]*)\)", README.read_text()):
        assert (DOCS.parent / target).exists(), f"README links to missing {target}"
