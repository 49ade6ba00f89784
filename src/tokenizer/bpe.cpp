#include "tokenizer/bpe.h"

#include <queue>

namespace lq::tok {

void BpeMerges::add(int32_t left, int32_t right, int32_t merged) {
  merges_[key(left, right)] = Merge{next_rank_++, merged};
}

const BpeMerges::Merge* BpeMerges::find(int32_t left, int32_t right) const {
  const auto it = merges_.find(key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeMerges::apply(std::vector<int32_t>& symbols) const {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  // Symbols form a doubly linked list; a merged-away symbol gets id -1.
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    uint32_t rank;
    int pos;  // left symbol of the pair
    int32_t merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push_pair = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    if (const Merge* m = find(symbols[left], symbols[next[left]])) queue.push({m->rank, left, m->merged});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    // Entries go stale when a neighbour merged since they were pushed: check the pair still holds.
    const int left = top.pos;
    if (symbols[left] < 0 || next[left] < 0) continue;
    const int right = next[left];
    const Merge* m = find(symbols[left], symbols[right]);
    if (!m || m->merged != top.merged || m->rank != top.rank) continue;
    symbols[left] = top.merged;
    symbols[right] = -1;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    push_pair(prev[left]);
    push_pair(left);
  }
  size_t kept = 0;
  for (int i = 0; i >= 0; i = next[i]) symbols[kept++] = symbols[i];
  symbols.resize(kept);
}

}  // namespace lq::tok
