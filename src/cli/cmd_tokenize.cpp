#include <cstdio>

#include "cli/commands.h"

namespace lq::cli {

int cmd_tokenize(const Args&) {
  std::fprintf(stderr, "lance-quant tokenize: not implemented yet\n");
  return 2;
}

}  // namespace lq::cli
