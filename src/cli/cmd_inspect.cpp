#include <cstdio>

#include "cli/commands.h"

namespace lq::cli {

int cmd_inspect(const Args&) {
  std::fprintf(stderr, "lance-quant inspect: not implemented yet\n");
  return 2;
}

}  // namespace lq::cli
