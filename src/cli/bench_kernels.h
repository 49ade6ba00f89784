// `lance-quant bench kernels` (a row of cmd_bench.cpp's subcommand table).
#pragma once
#include "cli/commands.h"

namespace lq::cli {

int bench_kernels(const Args& args);

}  // namespace lq::cli
