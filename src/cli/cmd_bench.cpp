#include <cstdio>

#include "cli/commands.h"

namespace lq::cli {

int cmd_bench(const Args&) {
  std::fprintf(stderr, "lance-quant bench: not implemented yet\n");
  return 2;
}

}  // namespace lq::cli
