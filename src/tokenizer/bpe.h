// Byte-pair-encoding merges: applies a ranked merge table to one pre-tokenized word.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace lq::tok {

class BpeMerges {
 public:
  // Adds the next merge (rank = number of merges added before). A pair added twice keeps the later
  // rank, as Hugging Face's merge map does.
  void add(int32_t left, int32_t right, int32_t merged);
  size_t size() const { return merges_.size(); }
  void reserve(size_t n) { merges_.reserve(n); }

  // Merges `symbols` (ids of the word's byte symbols) in place: repeatedly the lowest-ranked
  // adjacent pair, leftmost first. O(n log n) with a heap over a linked list of symbols.
  void apply(std::vector<int32_t>& symbols) const;

 private:
  struct Merge {
    uint32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const Merge* find(int32_t left, int32_t right) const;

  std::unordered_map<uint64_t, Merge> merges_;
  uint32_t next_rank_ = 0;
};

}  // namespace lq::tok
