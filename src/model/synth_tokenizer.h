// Tokenizer files for synthetic checkpoints: copy an existing tokenizer directory, or write a small
// deterministic GPT-2/Qwen2-format byte-level BPE (vocab.json, merges.txt, tokenizer_config.json).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace lq::model {

// The Lance special tokens, in the order their ids follow the BPE vocabulary.
inline const std::vector<std::string> kLanceSpecialTokens = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"};

struct TokenizerFiles {
  int size = 0;                           // len(tokenizer): highest id + 1
  std::map<std::string, int> special_ids; // of kLanceSpecialTokens found
  std::vector<std::string> files;         // written, relative to the output dir
};

// Copies whichever of tokenizer.json, tokenizer_config.json, vocab.json, merges.txt exist in src_dir.
TokenizerFiles copy_tokenizer(const std::string& src_dir, const std::string& out_dir);

// Learns `num_merges` merges (fewer if the built-in text runs out of pairs) from a small built-in English
// text, ids: 256 byte symbols in bytes_to_unicode order, then merges, then the 7 special tokens.
TokenizerFiles write_small_bpe(const std::string& out_dir, int num_merges);

// Writes `content` to `path` through a temporary file and a rename.
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace lq::model
