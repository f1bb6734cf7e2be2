// fp16 dynamic loss scaling's rule (framework/optim/loss_scaler.h).
#include <gtest/gtest.h>

#include <cmath>

#include "framework/optim/loss_scaler.h"
#include "base/error.h"

namespace tessera {
namespace {

TEST(LossScaler, HalvesOnOverflowDoublesAfterAWindow) {
  LossScaler s(true, 1024, 3);
  EXPECT_FALSE(s.update(false));  // overflow: skip, halve
  EXPECT_EQ(s.scale(), 512);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 512);
  EXPECT_TRUE(s.update(true));  // the third good step in a row doubles
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));  // an overflow resets the count of good steps
  EXPECT_EQ(s.scale(), 512);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 512);
  EXPECT_EQ(s.skipped_steps(), 2);
}

TEST(LossScaler, StateRoundTrips) {
  LossScaler s(true, 65536, 4);
  s.update(false), s.update(true);
  LossScaler t(true, 1, 4);
  t.restore(s.state());
  EXPECT_EQ(t.scale(), 32768);
  EXPECT_EQ(t.skipped_steps(), 1);
  for (int i = 0; i < 3; i++) s.update(true), t.update(true);  // the same good-step count
  EXPECT_EQ(t.scale(), s.scale());
  EXPECT_EQ(t.scale(), 65536);
}

TEST(LossScaler, DisabledNeverScalesOrSkips) {
  LossScaler s(false, 65536, 1);
  EXPECT_EQ(s.scale(), 1);
  EXPECT_TRUE(s.update(false));
  EXPECT_EQ(s.scale(), 1);
  EXPECT_EQ(s.skipped_steps(), 0);
}

TEST(LossScaler, GivesUpBelowTwoToTheMinus24) {
  LossScaler s(true, 1, 10);
  for (int i = 0; i < 24; i++) EXPECT_FALSE(s.update(false));
  EXPECT_EQ(s.scale(), std::ldexp(1.0, -24));
  EXPECT_THROW(s.update(false), Error);
}

}  // namespace
}  // namespace tessera
