#!/usr/bin/env bash
# Build fastconv's documentation and check it, as CI does (.ci/run):
#
#   1. the HTML site with warnings as errors (-W --keep-going), which also runs
#      every example of the gallery (docs/examples/plot_*.py, matplotlib's Agg
#      backend) and fails if one raises or a picture is missing;
#   2. the ``.. doctest::`` blocks of the guide (sphinx.ext.doctest);
#   3. the docstrings: every public name has a docstring with an Examples
#      section, and every example runs (tests/test_docs.py, plus pytest's
#      --doctest-modules over the package).
#
# Needs the [docs] extra (pip install -e ".[docs]") and, for the formulas,
# LaTeX and dvipng (Debian: apt-get install texlive-latex-base dvipng).
# Usage: docs/build.sh [OUTDIR]   (default docs/_build)
set -euo pipefail
DOCS=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$DOCS")
OUT=${1:-$DOCS/_build}
export MPLBACKEND=Agg
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}   # see docs/conf.py

for tool in latex dvipng; do
    command -v "$tool" >/dev/null || { echo "docs/build.sh: $tool not found (apt-get install texlive-latex-base dvipng)" >&2; exit 1; }
done

cd "$REPO"
echo "-- sphinx html (-W), with the gallery"
python -m sphinx -W --keep-going -q -b html -d "$OUT/doctrees" "$DOCS" "$OUT/html"
for png in "$DOCS"/auto_examples/images/sphx_glr_plot_*_001.png; do
    [ -s "$png" ] || { echo "docs/build.sh: the gallery made no pictures" >&2; exit 1; }
done
echo "gallery pictures: $(ls "$DOCS"/auto_examples/images/sphx_glr_plot_*.png | wc -l)"

echo "-- sphinx doctest (the guide's examples)"
python -m sphinx -W --keep-going -q -b doctest -d "$OUT/doctrees" "$DOCS" "$OUT/doctest"

echo "-- docstrings: every public name documented with an example, every example run"
python -m pytest -q -p no:cacheprovider "$REPO/tests/test_docs.py"
python -m pytest -q -p no:cacheprovider --doctest-modules "$REPO/fastconv"
echo "docs OK: $OUT/html/index.html"
