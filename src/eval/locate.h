// Finding the repository's shipped data and the shared lance-mini fixture from an installed or
// in-tree executable: explicit setting, environment, then the directories above the executable and
// above the working directory.
#pragma once
#include <string>

namespace lq::eval {

// data/<sub> (e.g. "eval", "calib") of the checkout: $LQ_DATA_DIR/../<sub> when LQ_DATA_DIR is set
// (it names data/eval), else the first data/<sub> above the executable or the working directory.
// "" when not found.
std::string find_data_dir(const std::string& sub);
// shared/fixtures/lance-mini beside the checkout ($LANCE_QUANT_SHARED/fixtures/lance-mini first); "" if absent.
std::string find_lance_mini();

}  // namespace lq::eval
