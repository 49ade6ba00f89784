#include "io/heap.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lq::io {

void fix_heap_mmap_threshold(size_t bytes) {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, int(bytes));  // a fixed value also disables the dynamic adjustment
#else
  (void)bytes;
#endif
}

}  // namespace lq::io
