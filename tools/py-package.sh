#!/bin/sh
# Installs the lance_quant Python package into a venv exactly as the README says (`make python`, i.e. the
# Debian packages then `pip install .` from the checkout), then checks `python -c "import lance_quant"` and copies the installed package to
# BUILD/py-pkg so other interpreters (the torch venv, LQ_INTEROP_PYTHON) can import the same build.
# The CMake build directory of the package is kept in BUILD/py-build (SKBUILD_BUILD_DIR), so a rerun only
# recompiles what changed. Usage: sh tools/py-package.sh VENV BUILD
set -e
VENV=${1:-build/pyenv}
BUILD=${2:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(mkdir -p "$BUILD" && cd "$BUILD" && pwd)
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
export SKBUILD_BUILD_DIR="$BUILD/py-build"
# ccache, when installed, makes rebuilds after a clean cheap (scikit-build-core passes CMAKE_ARGS to CMake).
command -v ccache >/dev/null 2>&1 && export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_CXX_COMPILER_LAUNCHER=ccache"
make -s -C "$SRC" python PYTHON="$(cd "$(dirname "$VENV/bin/python")" && pwd)/python"
"$VENV/bin/python" -c "import lance_quant; print('lance_quant', lance_quant.__version__, 'kernels:', lance_quant.kernel_path())"
PKG=$("$VENV/bin/python" -c "import lance_quant, os; print(os.path.dirname(lance_quant.__file__))")
rm -rf "$BUILD/py-pkg"
mkdir -p "$BUILD/py-pkg"
cp -r "$PKG" "$BUILD/py-pkg/lance_quant"
