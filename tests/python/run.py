#!/usr/bin/env python3
"""ctest driver of the lance_quant package tests: `run.py api|torch|comfyui|coreml`.

The package is installed into the test venv by tools/py-package.sh (the README's `pip install .`), which
also copies it to $LQ_BINARY_DIR/py-pkg. Suites that need torch (torch, comfyui) re-execute themselves
with $LQ_INTEROP_PYTHON (the heavy venv CI builds with tools/interop-venv.sh) and that copy on PYTHONPATH;
without torch they exit 77 (skipped) saying so. pytest runs in-process; a run whose tests were all skipped
also exits 77 so ctest reports it as skipped.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SUITES = {
    "api": (["test_api.py", "test_media.py"], ["numpy"]),
    "torch": (["test_torch.py"], ["torch", "transformers"]),
    "comfyui": (["test_comfyui.py"], ["torch"]),
    "coreml": (["test_coreml.py"], ["coremltools"]),
}


def skip(msg):
    print("SKIP:", msg)
    sys.exit(77)


def missing(mods):
    return [m for m in mods if importlib.util.find_spec(m) is None]


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print("usage: run.py " + "|".join(SUITES) + " [pytest args]")
        return 2
    suite = sys.argv[1]
    files, needs = SUITES[suite]
    pkg_copy = os.path.join(os.environ.get("LQ_BINARY_DIR", os.path.join(HERE, "..", "..", "build")), "py-pkg")
    lacking = missing(needs + ["pytest"])
    if lacking and suite in ("torch", "comfyui"):
        py = os.environ.get("LQ_INTEROP_PYTHON")
        if py and not os.environ.get("LQ_PY_REEXEC"):
            os.environ["LQ_PY_REEXEC"] = "1"
            os.environ["PYTHONPATH"] = pkg_copy + os.pathsep + os.environ.get("PYTHONPATH", "")
            os.execv(py, [py] + sys.argv)
        skip(f"{', '.join(lacking)} not installed in {sys.executable}; set LQ_INTEROP_PYTHON to a python with torch "
             "and transformers (tools/interop-venv.sh creates one)")
    if lacking:
        skip(f"{', '.join(lacking)} not installed in {sys.executable} (tools/requirements-test.txt)")
    if importlib.util.find_spec("lance_quant") is None:
        if os.path.isdir(os.path.join(pkg_copy, "lance_quant")):
            sys.path.insert(0, pkg_copy)
        else:
            skip("lance_quant is not installed (the python_package_setup test runs tools/py-package.sh)")

    import pytest

    class Outcomes:
        def __init__(self):
            self.passed = self.failed = self.skipped = 0

        def pytest_runtest_logreport(self, report):
            if report.when == "call" and report.passed:
                self.passed += 1
            elif report.failed:
                self.failed += 1
            elif report.skipped:
                self.skipped += 1

    o = Outcomes()
    sys.path.insert(0, HERE)
    code = pytest.main(["-q", "-rs", "-p", "no:cacheprovider"] + [os.path.join(HERE, f) for f in files] +
                       sys.argv[2:], plugins=[o])
    if code == 0 and o.passed == 0 and o.skipped > 0:
        print("SKIP: every test of the suite was skipped (see the reasons above)")
        return 77
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
