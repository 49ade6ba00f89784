#include <gtest/gtest.h>

#include "num/formats.h"

TEST(Bf16, RoundTripsExactValues) {
  EXPECT_EQ(lq::num::bf16_to_f32(lq::num::f32_to_bf16(1.5f)), 1.5f);
}
