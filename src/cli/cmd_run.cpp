#include <cstdio>

#include "cli/commands.h"

namespace lq::cli {

int cmd_run(const Args&) {
  std::fprintf(stderr, "lance-quant run: not implemented yet\n");
  return 2;
}

}  // namespace lq::cli
