#include <cstdio>

#include "cli/commands.h"

namespace lq::cli {

int cmd_synth(const Args&) {
  std::fprintf(stderr, "lance-quant synth: not implemented yet\n");
  return 2;
}

}  // namespace lq::cli
