// logical_boxes (framework/model/params.h): a rank's local slice, or any range of it, as
// boxes of the logical tensor — what checkpoints write and read. Checked element by
// element against ParamInfo::logical_index for every tp slice of the GPT-2 shapes.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "framework/model/params.h"

namespace tessera {
namespace {

// Every element of every box maps to the logical index logical_index() gives its local
// element, and the boxes cover exactly the non-padding elements of [begin, end).
void expect_boxes_match(const ParamInfo& p, int64_t begin, int64_t end) {
  const auto boxes = logical_boxes(p, begin, end);
  std::set<int64_t> covered;
  for (const LogicalBox& b : boxes) {
    ASSERT_EQ(b.offset.size(), p.shape.size());
    for (int64_t k = 0; k < b.numel(); k++) {
      // The k-th element of the box in C order, as a logical flat index.
      int64_t logical = 0, rest = k;
      std::vector<int64_t> at(b.count.size());
      for (int d = (int)b.count.size() - 1; d >= 0; d--) at[d] = rest % b.count[d], rest /= b.count[d];
      for (size_t d = 0; d < at.size(); d++) logical = logical * p.shape[d] + b.offset[d] + at[d];
      const int64_t local = b.local_begin + k;
      ASSERT_GE(local, begin);
      ASSERT_LT(local, end);
      ASSERT_EQ(p.logical_index(local), logical) << p.name << " box element " << k;
      ASSERT_TRUE(covered.insert(local).second) << p.name << ": local element twice";
    }
  }
  for (int64_t i = begin; i < end; i++) {
    if (p.logical_index(i) >= 0) {
      ASSERT_TRUE(covered.count(i)) << p.name << " misses " << i;
    }
  }
}

ParamTable table_for(int tp_rank, int tp) {
  // GPT-2's kinds of shard, small: C = 8, 2 heads, padded vocabulary 21 (not divisible).
  const int64_t C = 8, V = 21;
  const ShardSpec rows{0, 1, tp_rank, tp}, cols{1, 1, tp_rank, tp}, qkv{0, 3, tp_rank, tp};
  ParamTable t;
  t.add("wte", {V, C}, Init::Normal, 0.02f, false, rows);
  t.add("wpe", {5, C}, Init::Normal, 0.02f, false);
  t.add("qkv.weight", {3 * C, C}, Init::Normal, 0.02f, true, qkv);
  t.add("qkv.bias", {3 * C}, Init::Zeros, 0, false, qkv);
  t.add("proj.weight", {C, C}, Init::Normal, 0.02f, true, cols);
  t.add("up.bias", {4 * C}, Init::Zeros, 0, false, rows);
  t.add("ln.weight", {C}, Init::Ones, 0, false);
  return t;
}

TEST(LogicalBoxes, WholeSlices) {
  for (int tp : {1, 2, 4})
    for (int r = 0; r < tp; r++) {
      const ParamTable t = table_for(r, tp);
      for (const ParamInfo& p : t.params()) expect_boxes_match(p, 0, p.numel);
    }
}

TEST(LogicalBoxes, FewBoxesForWholeSlices) {
  const ParamTable t = table_for(1, 2);
  EXPECT_EQ(logical_boxes(t.get("qkv.weight"), 0, t.get("qkv.weight").numel).size(), 3u);
  const auto proj = logical_boxes(t.get("proj.weight"), 0, t.get("proj.weight").numel);
  ASSERT_EQ(proj.size(), 1u);  // all rows, this rank's 4 columns
  EXPECT_EQ(proj[0], (LogicalBox{{0, 4}, {8, 4}, 0}));
  const auto wte = logical_boxes(t.get("wte"), 0, t.get("wte").numel);
  ASSERT_EQ(wte.size(), 1u);  // rows 11..20; the 11th local row is padding
  EXPECT_EQ(wte[0], (LogicalBox{{11, 0}, {10, 8}, 0}));
}

TEST(LogicalBoxes, RangesThatCutRows) {
  std::mt19937 gen(7);
  for (int tp : {1, 2, 4})
    for (int r = 0; r < tp; r++) {
      const ParamTable t = table_for(r, tp);
      for (const ParamInfo& p : t.params())
        for (int trial = 0; trial < 20; trial++) {
          std::uniform_int_distribution<int64_t> pick(0, p.numel);
          int64_t a = pick(gen), b = pick(gen);
          if (a > b) std::swap(a, b);
          expect_boxes_match(p, a, b);
        }
    }
}

}  // namespace
}  // namespace tessera
