// libFuzzer target for the safetensors header parser. The input is a whole file image; the parser
// must either accept it or throw lq::Error. Any other exception, a sanitizer report, or an
// accepted header that points outside the input is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "io/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lq::io::SafetensorsHeader h = lq::io::SafetensorsFile::parse_header(data, size, "fuzz-input");
    // What the reader relies on later: every accepted tensor lies inside the buffer, and its byte
    // count matches its shape and dtype.
    for (const auto& t : h.tensors) {
      if (t.begin > t.end || h.data_offset + t.end > size) std::abort();
      if (uint64_t(t.numel()) * lq::io::dtype_size(t.dtype) != t.nbytes()) std::abort();
    }
  } catch (const lq::Error&) {
    // Rejected with a message: the expected outcome for malformed input.
  }
  return 0;
}
