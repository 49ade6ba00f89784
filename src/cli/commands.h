// Subcommands of the `lance-quant` executable. Each takes the arguments after its name and
// returns the process exit code; main() is the table in main.cpp.
#pragma once
#include <string>
#include <vector>

namespace lq::cli {

using Args = std::vector<std::string>;

int cmd_inspect(const Args& args);
int cmd_synth(const Args& args);
int cmd_synth_vae(const Args& args);
int cmd_tokenize(const Args& args);
int cmd_run(const Args& args);
int cmd_bench(const Args& args);
int cmd_calibrate(const Args& args);
int cmd_export(const Args& args);
int cmd_merge_stats(const Args& args);
int cmd_eval(const Args& args);
int cmd_demo(const Args& args);
int cmd_quantize(const Args& args);

}  // namespace lq::cli
