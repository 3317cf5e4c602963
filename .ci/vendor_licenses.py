"""Ship the licence of each vendored OpenMP runtime beside it in repaired wheels.

    python .ci/vendor_licenses.py WHEEL_OR_DIR [...]

auditwheel (Linux) copies libgomp into ``fastconv.libs/`` and delocate (macOS)
copies libomp into ``fastconv/.dylibs/``; neither ships the library's licence.
For every wheel given (or found in a given directory) this adds
``LICENSE-libgomp.txt`` / ``LICENSE-libomp.txt`` to the folder that holds the
vendored library, rewriting the wheel's RECORD with ``wheel unpack/pack``.
Wheels that vendor no OpenMP runtime are left alone. Exits non-zero if a
wheel vendors a runtime whose licence is unknown here.
"""

import pathlib
import shutil
import subprocess
import sys
import tempfile

LICENSES = pathlib.Path(__file__).resolve().parent / "licenses"
# vendored file name prefix -> licence file in .ci/licenses
RUNTIMES = {"libgomp": "libgomp.txt", "libomp": "libomp.txt"}
UNKNOWN = ("libiomp", "vcomp")  # Windows' vcomp ships under MSVC's redistribution terms


def _wheels(args):
    for arg in map(pathlib.Path, args):
        yield from sorted(arg.glob("*.whl")) if arg.is_dir() else [arg]


def add_licenses(wheel):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", tmp, str(wheel)],
                       check=True, capture_output=True)
        root = next(pathlib.Path(tmp).iterdir())
        added = []
        for lib in root.rglob("*"):
            if not lib.is_file() or lib.suffix in (".txt", ".py", ".pyi", ".pyx"):
                continue
            for prefix, text in RUNTIMES.items():
                if lib.name.startswith(prefix + "-") or lib.name.startswith(prefix + "."):
                    target = lib.parent / f"LICENSE-{prefix}.txt"
                    shutil.copyfile(LICENSES / text, target)
                    added.append(target.relative_to(root))
            if lib.name.startswith(UNKNOWN) and lib.parent.name.endswith((".libs", ".dylibs")):
                sys.exit(f"{wheel.name}: vendors {lib.name}, whose licence is not in {LICENSES}")
        if not added:
            print(f"{wheel.name}: no vendored OpenMP runtime, unchanged")
            return
        wheel.unlink()
        subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(wheel.parent),
                        str(root)], check=True, capture_output=True)
        print(f"{wheel.name}: added {', '.join(map(str, added))}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for whl in list(_wheels(sys.argv[1:])):
        add_licenses(whl)
