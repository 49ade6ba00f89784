// `lance-quant bench decode` (a row of cmd_bench.cpp's subcommand table).
#pragma once
#include "cli/commands.h"

namespace lq::cli {

int bench_decode(const Args& args);

}  // namespace lq::cli
