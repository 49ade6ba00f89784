# Entry points. `make demo` installs what is missing (Debian packages, as root), builds and runs the
# main job on the embedded default; `make test` builds and runs the whole test suite; `make python`
# installs the lance_quant Python package into $(PYTHON)'s environment (`pip install .`).
BUILD ?= build
JOBS ?= $(shell nproc)
PYTHON ?= python3
CMAKE_FLAGS ?=

.PHONY: all deps build demo test bench fuzz clean python

all: build

deps:
	@sh tools/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	sh tools/demo.sh $(BUILD)/lance-quant

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

python: deps
	$(PYTHON) -m pip install .

fuzz: deps
	sh tools/fuzz/run.sh 60

clean:
	rm -rf $(BUILD)
