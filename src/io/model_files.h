// Which files of a model directory may be read. Checkpoints come from the internet, so a file of a
// model directory (weights, shards, configs, tokenizer, metas) is read only when it is a regular file,
// or a symbolic link that resolves to a regular file inside the model directory or, when the directory
// is a Hugging Face cache snapshot (<repo>/snapshots/<revision>/, whose files link to ../../blobs/),
// inside that repository's blobs/ store. Any other link (to /etc/passwd, into another model, ...) is
// refused, naming the link and its target; nothing of it is read. Tools copy only named side files.
#pragma once
#include <string>

namespace lq::io {

// Throws lq::Error naming `path` when it may not be read as a file of the model directory `dir`
// (absent, not a regular file, or a link leading outside, see above).
void check_model_file(const std::string& dir, const std::string& path);
// `dir`/`name` when it exists and may be read, "" when it does not exist; throws when it exists but
// is refused (a link out of the directory, a directory, a device, ...).
std::string model_file(const std::string& dir, const std::string& name);

}  // namespace lq::io
