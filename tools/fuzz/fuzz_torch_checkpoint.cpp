// libFuzzer target for the torch.save reader (zip directory + pickle machine). The input is a whole
// archive image; the reader must either accept it or throw lq::Error. Any other exception, a sanitizer
// report, or an accepted tensor whose elements cannot all be read inside the input is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "io/error.h"
#include "io/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lq::io::TorchCheckpoint c = lq::io::TorchCheckpoint::from_memory(data, size, "fuzz-input");
    for (const auto& name : c.names()) {
      if (c.info(name).numel() > (int64_t(1) << 20)) continue;  // reading is bounded by the input anyway
      (void)c.read_f32(name);
    }
  } catch (const lq::Error&) {
    // Rejected with a message: the expected outcome for malformed input.
  }
  return 0;
}
