#include "forward/forward.h"
