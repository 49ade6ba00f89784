// Heap retention of long jobs. glibc raises its mmap threshold to the size of each large block freed
// (up to 32 MiB), after which same-sized blocks come from the heap and fragment it: streaming jobs that
// allocate and free layer-sized buffers (quantize: ViT activations, per-candidate weight copies) then
// keep freed memory resident. A fixed threshold returns every block >= `bytes` to the system on free.
// No-op without glibc.
#pragma once
#include <cstddef>

namespace lq::io {

void fix_heap_mmap_threshold(size_t bytes = size_t(1) << 20);

}  // namespace lq::io
