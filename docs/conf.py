"""Sphinx configuration of fastconv's documentation.

Build with ``docs/build.sh`` (warnings are errors, then the doctests), or by
hand: ``python -m sphinx -W -b html docs docs/_build/html``.

* API reference: ``api/<module>.rst`` is written here, at configuration time,
  from each public module's ``__all__`` (``api_modules()``), so a name added to
  a module's ``__all__`` gets its page without touching the docs; autosummary
  then generates one page per name from its docstring (``generated/``).
* Docstrings are numpydoc-style, parsed by ``sphinx.ext.napoleon`` (numpydoc
  itself drops sections it does not know, and fastconv's docstrings carry a
  ``Shape`` section, which napoleon keeps as a custom section).
* Maths is rendered OFFLINE by ``sphinx.ext.imgmath``: LaTeX + dvipng turn each
  formula into a PNG at build time (Debian: ``apt-get install texlive-latex-base
  dvipng``), so the pages need no MathJax or KaTeX from a CDN. Sphinx's
  preamble loads ``anyfontsize``, which Debian ships only in the large
  ``texlive-latex-extra``: ``_latex/anyfontsize.sty`` stands in for it
  (through ``TEXINPUTS``), as the formulas need no font scaling.
* The example gallery is sphinx-gallery: ``examples/plot_*.py`` run at build
  time (matplotlib's Agg backend) and become ``auto_examples/``.
"""

import importlib
import inspect
import os
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")
# The gallery trains small networks. On a loaded machine (CI shares its cores)
# GNU libgomp's idle threads spin, and a 2-thread training step then ran 20x
# slower than with passive waiting (measured: 19 s against 0.8 s for 300
# MNIST-1D steps at a load average of 7 on 2 cores). Set before fastconv
# loads the OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import fastconv  # noqa: E402

project = "fastconv"
author = "The fastconv developers"
copyright = "the fastconv developers, BSD-3-Clause"
release = fastconv.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.imgmath",
    "sphinx.ext.intersphinx",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/GALLERY_HEADER.rst", "api/_*", "guide/_*"]
root_doc = "index"
nitpicky = False

# -- maths: offline PNGs from LaTeX -------------------------------------------
html_math_renderer = "imgmath"
os.environ["TEXINPUTS"] = f"{HERE / '_latex'}{os.pathsep}{os.environ.get('TEXINPUTS', '')}"
imgmath_image_format = "png"
imgmath_latex = "latex"
imgmath_dvipng = "dvipng"
imgmath_font_size = 12
imgmath_dvipng_args = ["-gamma", "1.5", "-D", "120", "-bg", "Transparent"]
imgmath_embed = True  # the PNGs inline in the HTML: the pages stand alone

# -- docstrings ---------------------------------------------------------------
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Shape", "notes_style")]

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
autoclass_content = "class"
add_module_names = False

# sphinx.ext.doctest runs the ``.. doctest::`` blocks of the guide; the
# docstrings' own examples run under pytest (tests/test_docs.py)
doctest_global_setup = "import numpy as np\nimport fastconv"
doctest_default_flags = (__import__("doctest").NORMALIZE_WHITESPACE
                         | __import__("doctest").ELLIPSIS)

intersphinx_mapping = {}  # offline: no inventories are fetched

# -- the gallery --------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "reference_url": {},
    "show_memory": False,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "min_reported_time": 0,
    # the computation-times page loads jQuery and DataTables from CDNs: the
    # site must work offline, and each example page shows its own time
    "write_computation_times": False,
}

# -- HTML ---------------------------------------------------------------------
html_theme = "alabaster"
html_static_path = ["_static"]
html_css_files = ["fastconv.css"]
html_title = f"fastconv {release}"
html_theme_options = {
    "description": "Fast, exact CNN kernels for NumPy",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
    "show_powered_by": False,
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
html_show_sourcelink = False


# -- the API pages, from each module's __all__ ------------------------------------

#: The public modules, in the order of the API index, with a one-line title.
#: ``fastconv.dask`` (and any other optional module) is listed only when it
#: imports, so the docs build before and after it lands.
API_MODULES = [
    ("fastconv", "Functional ops and configuration"),
    ("fastconv.grad", "Gradients"),
    ("fastconv.nn", "Layers and losses"),
    ("fastconv.optim", "Optimisers"),
    ("fastconv.models", "ResNets with torchvision's names"),
    ("fastconv.reference", "The pure-NumPy reference"),
    ("fastconv.dask", "Dask"),
]


def public_names(module):
    """The documented names of ``module``: its ``__all__`` without sub-modules,
    namespaces and ``__version__`` (these have their own pages or none)."""
    names = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if name.startswith("__") or isinstance(obj, (types.ModuleType,
                                                       types.SimpleNamespace)):
            continue
        names.append(name)
    return names


def api_modules():
    """``[(module, title)]`` for the public modules that import here."""
    found = []
    for name, title in API_MODULES:
        try:
            module = importlib.import_module(name)
            public_names(module)  # fastconv.dask imports, but needs dask for its names
        except ImportError:
            continue
        found.append((module, title))
    return found


def _kind(obj):
    return "Classes" if inspect.isclass(obj) else "Functions"


def _module_page(module, title):
    name = module.__name__
    heading = f"``{name}``: {title}"
    lines = [heading, "=" * len(heading), "", f".. automodule:: {name}", "   :no-members:", "",
             f".. currentmodule:: {name}", ""]
    groups = {}
    for item in public_names(module):
        groups.setdefault(_kind(getattr(module, item)), []).append(item)
    for kind in ("Functions", "Classes"):
        if kind not in groups:
            continue
        lines += [kind, "-" * len(kind), "", ".. autosummary::", "   :toctree: ../generated",
                  "   :template: " + ("class.rst" if kind == "Classes" else "function.rst"), ""]
        lines += [f"   {item}" for item in groups[kind]]
        lines.append("")
    # namespaces in __all__ (fastconv.reference.grad): their members are
    # documented functions under other names
    for item in getattr(module, "__all__", ()):
        space = getattr(module, item)
        if not isinstance(space, types.SimpleNamespace):
            continue
        title = f"``{name}.{item}``"
        lines += [title, "-" * len(title), "",
                  f"The same functions under the names of :mod:`fastconv.{item}`, so that "
                  f"code written against one runs on the other:", ""]
        for member, func in sorted(vars(space).items()):
            lines.append(f"* ``{item}.{member}``: :func:`{func.__name__}`")
        lines.append("")
    return "\n".join(lines)


def write_api_pages():
    api = HERE / "api"
    api.mkdir(exist_ok=True)
    pages = []
    for module, title in api_modules():
        page = api / f"{module.__name__}.rst"
        text = _module_page(module, title)
        if not page.exists() or page.read_text() != text:
            page.write_text(text)
        pages.append(page.stem)
    index = ["API reference", "=============", "",
             "One page per public name, generated from its docstring. Every page has the",
             "signature, the parameters, a **Shape** section with the output-size formula",
             "where the op has one, the rules (ties, NaN, ``ceil_mode``, ``'same'``) and an",
             "example that runs as a doctest (``tests/test_docs.py``).", "",
             ".. toctree::", "   :maxdepth: 2", ""]
    index += [f"   {p}" for p in pages]
    text = "\n".join(index) + "\n"
    if not (api / "index.rst").exists() or (api / "index.rst").read_text() != text:
        (api / "index.rst").write_text(text)


def guide_pages():
    """The guide's pages in reading order; pages another branch adds
    (``deploy``, ``dask``) are listed only once their file exists."""
    order = ["scanning", "conventions", "gradients", "training", "threads", "performance",
             "deploy", "dask", "building", "internals"]
    present = [p for p in order if (HERE / "guide" / f"{p}.rst").exists()]
    extra = sorted(p.stem for p in (HERE / "guide").glob("*.rst")
                   if p.stem not in order and p.stem != "index")
    return present + extra


def write_guide_index():
    head = (HERE / "guide" / "_index_head.txt").read_text()
    text = head + "\n".join(f"   {p}" for p in guide_pages()) + "\n"
    index = HERE / "guide" / "index.rst"
    if not index.exists() or index.read_text() != text:
        index.write_text(text)


write_api_pages()
write_guide_index()
