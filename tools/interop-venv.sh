#!/bin/sh
# Creates the heavy Python venv for tests/formats/interop_test.py and tests/python (torch, comfyui): the public decoders of our
# checkpoint formats (compressed-tensors, AutoAWQ) need torch, whose PyPI wheel pulls ~7 GB of CUDA
# libraries (about 16 minutes here), so they are kept out of tools/requirements-test.txt.
# Usage: sh tools/interop-venv.sh [VENV]; then LQ_INTEROP_PYTHON=VENV/bin/python ctest -R interop
set -e
VENV=${1:-build/pyenv-interop}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check torch==2.9.1 compressed-tensors==0.15.0.1 psutil accelerate numpy
# autoawq 0.2.9 is deprecated; its dependency pins (torch 2.6, transformers 4.51) conflict, and the
# test only imports awq/utils/packing_utils.py and awq/modules/linear/gemm.py.
"$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps autoawq==0.2.9
# nvidia-modelopt: only its NVFP4QTensor reference dequantization is used; these are the imports it needs.
"$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps nvidia-modelopt==0.47.0
"$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check requests scipy pulp ninja pydantic rich
# The lance_quant package's torch / ComfyUI suites (tests/python/run.py): transformers loads our HF export
# for the patch_linears drop-in check; pytest runs the suites.
"$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check transformers==5.25.0 pytest==9.2.0 pillow==13.0.0
