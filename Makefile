# Entry points. `make demo` installs what is missing (Debian packages, as root), builds the one program
# the demo runs and runs the main job on the embedded default; `make test` builds and runs the whole
# test suite; `make sanitize` builds everything with ASan + UBSan into build-asan and runs the suite;
# `make fuzz` runs every libFuzzer target for FUZZ_SECONDS (default 60) each.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build demo test bench fuzz sanitize clean

all: build

deps:
	@sh tools/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Only the lance-quant executable (and the libraries it links): no test or benchmark targets.
demo: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS) --target lance-quant
	sh tools/demo.sh $(BUILD)/lance-quant

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

FUZZ_SECONDS ?= 60
fuzz: deps
	sh tools/fuzz/run.sh $(FUZZ_SECONDS)

# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (gcc), in its own build dir.
# Tests that cannot run under ASan are excluded in tools/sanitize.sh, each with its reason.
sanitize: deps
	sh tools/sanitize.sh build-asan $(JOBS)

clean:
	rm -rf $(BUILD)
