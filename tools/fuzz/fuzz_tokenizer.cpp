// libFuzzer target for the tokenizer file parsers (tokenizer/tokenizer_files.h) and the tokenizer
// built from them. Input: a bundle (fuzz_util.h) of [selector, file 1, file 2, file 3]; selector
// 'J' = tokenizer.json (file 1), otherwise vocab.json + merges.txt + tokenizer_config.json.
// A tokenizer that loads must encode and decode a short text. Accept or throw lq::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "io/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lq::fuzz::Scratch scratch;
  scratch.clear();
  const std::vector<std::string> parts = lq::fuzz::split_bundle(data, size, 4);
  if (!parts[0].empty() && parts[0][0] == 'J') {
    scratch.write("tokenizer.json", parts[1]);
  } else {
    scratch.write("vocab.json", parts[1]);
    scratch.write("merges.txt", parts[2]);
    if (!parts[3].empty()) scratch.write("tokenizer_config.json", parts[3]);
  }
  try {
    lq::tok::read_tokenizer_files(scratch.dir());
    const lq::tok::Tokenizer t = lq::tok::Tokenizer::load(scratch.dir());
    const std::vector<int32_t> ids = t.encode("Hello world, <|im_start|>a red circle 12345 \xc3\xa9t\xc3\xa9");
    t.decode(ids);
  } catch (const lq::Error& e) {
    lq::fuzz::rejected(e.what());
  }
  return 0;
}
