// Layout validation and rank order, without MPI (parallel/mesh.h's pure functions).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "base/error.h"
#include "parallel/mesh.h"

using namespace tessera;

namespace {

// The tiny recipe's model facts: 4 layers, 4 heads, 128 wide, batch 32 of micro 16.
LayoutSpec tiny(int dp, int tp, int pp) {
  LayoutSpec l;
  l.dp = dp, l.tp = tp, l.pp = pp;
  l.n_head = 4, l.n_embd = 128, l.n_layer = 4;
  l.global_batch = 32, l.micro_batch = 16;
  return l;
}

std::string message(const LayoutSpec& l, int world) {
  try {
    validate_layout(l, world);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Layout, ValidLayoutsPass) {
  EXPECT_FALSE(layout_problem(tiny(1, 1, 1), 1));
  EXPECT_FALSE(layout_problem(tiny(2, 1, 1), 2));
  EXPECT_FALSE(layout_problem(tiny(1, 4, 1), 4));
  EXPECT_FALSE(layout_problem(tiny(1, 1, 4), 4));
  EXPECT_FALSE(layout_problem(tiny(2, 2, 2), 8));
  EXPECT_NO_THROW(validate_layout(tiny(2, 2, 1), 4));
}

// layout_problem itself: validate_layout's hint depends on SLURM_JOB_ID, and these tests
// may run inside a Slurm job.
TEST(Layout, WorldSizeMismatch) {
  EXPECT_EQ(layout_problem(tiny(2, 2, 1), 2).value_or(""),
            "parallel layout dp=2 x tp=2 x pp=1 = 4 ranks, but the job has 2 MPI ranks "
            "(start it with mpirun -n 4 or change parallel.dp/tp/pp)");
  EXPECT_EQ(layout_problem(tiny(2, 1, 1), 1).value_or(""),
            "parallel layout dp=2 x tp=1 x pp=1 = 2 ranks, but the job has 1 MPI rank "
            "(start it with mpirun -n 2 or change parallel.dp/tp/pp)");
}

// In a Slurm job the hint is srun's and sbatch's option, not mpirun.
TEST(Layout, WorldSizeMismatchUnderSlurm) {
  EXPECT_EQ(layout_problem(tiny(2, 2, 1), 2, /*under_slurm=*/true).value_or(""),
            "parallel layout dp=2 x tp=2 x pp=1 = 4 ranks, but the job has 2 MPI ranks "
            "(start it with srun -n 4 or sbatch --ntasks=4, or change parallel.dp/tp/pp)");
}

// Every rank raises a layout problem identically: a ConfigError, which the command line
// prints once and ends without MPI_Abort.
TEST(Layout, ProblemsAreConfigErrors) {
  EXPECT_THROW(validate_layout(tiny(2, 2, 1), 2), ConfigError);
  EXPECT_THROW(validate_layout(tiny(1, 3, 1), 3), ConfigError);
}

TEST(Layout, DegreeBelowOne) {
  EXPECT_EQ(message(tiny(0, 1, 1), 0),
            "parallel layout dp=0 x tp=1 x pp=1: every parallel degree must be at least 1");
}

TEST(Layout, HeadsNotDivisibleByTp) {
  LayoutSpec l = tiny(1, 3, 1);
  l.n_embd = 129;  // divisible by 3, so the heads are the first problem
  EXPECT_EQ(message(l, 3),
            "parallel layout dp=1 x tp=3 x pp=1: model.n_head = 4 is not divisible by "
            "parallel.tp = 3 (attention heads are split across tensor-parallel ranks)");
}

TEST(Layout, MlpWidthNotDivisibleByTp) {
  LayoutSpec l = tiny(1, 3, 1);
  l.n_head = 6;  // heads fine, 4 * 128 = 512 is not a multiple of 3
  EXPECT_EQ(message(l, 3),
            "parallel layout dp=1 x tp=3 x pp=1: the MLP width 4 * model.n_embd = 512 is not "
            "divisible by parallel.tp = 3 (MLP columns are split across tensor-parallel ranks)");
}

TEST(Layout, LlamaKeyValueHeadsAndMlpWidthNotDivisibleByTp) {
  LayoutSpec l = tiny(1, 2, 1);
  l.n_kv_head = 1;  // grouped-query attention with one key/value head cannot be split
  EXPECT_EQ(message(l, 2),
            "parallel layout dp=1 x tp=2 x pp=1: model.n_kv_head = 1 is not divisible by "
            "parallel.tp = 2 (key/value heads are split across tensor-parallel ranks)");
  l.n_kv_head = 2, l.mlp_width = 345;
  EXPECT_EQ(message(l, 2),
            "parallel layout dp=1 x tp=2 x pp=1: the MLP width 345 is not divisible by "
            "parallel.tp = 2 (MLP columns are split across tensor-parallel ranks)");
  l.mlp_width = 344;
  EXPECT_EQ(message(l, 2), "");
}

TEST(Layout, EmbeddingWidthNotDivisibleByTp) {
  LayoutSpec l = tiny(1, 4, 1);
  l.n_embd = 130;  // 4 * 130 = 520 is a multiple of 4, 130 is not
  EXPECT_EQ(message(l, 4),
            "parallel layout dp=1 x tp=4 x pp=1: model.n_embd = 130 is not divisible by "
            "parallel.tp = 4 (the embedding width is split across tensor-parallel ranks)");
}

TEST(Layout, FewerLayersThanStages) {
  EXPECT_EQ(message(tiny(1, 1, 8), 8),
            "parallel layout dp=1 x tp=1 x pp=8: model.n_layer = 4 is fewer than parallel.pp = "
            "8 pipeline stages (every stage needs at least one layer)");
}

TEST(Layout, GlobalBatchNotDivisibleByDpTimesMicroBatch) {
  LayoutSpec l = tiny(4, 1, 1);  // 4 * 16 = 64 does not divide 32
  EXPECT_EQ(message(l, 4),
            "parallel layout dp=4 x tp=1 x pp=1: train.global_batch = 32 is not divisible by "
            "parallel.dp * train.micro_batch = 4 * 16 = 64");
  l.micro_batch = 8;
  EXPECT_EQ(message(l, 4), "");
}

TEST(Layout, WorldSizeIsCheckedFirst) {
  // Several problems at once: the message names the world size, the first fix to make.
  LayoutSpec l = tiny(3, 3, 8);
  EXPECT_NE(message(l, 4).find("= 72 ranks, but the job has 4 MPI ranks"), std::string::npos);
}

TEST(RankOrder, TpFastestThenDpThenPp) {
  // The 8-rank table of docs/parallel.md.
  const int dp = 2, tp = 2, pp = 2;
  const std::map<int, MeshCoords> expected = {
      {0, {0, 0, 0}}, {1, {0, 1, 0}}, {2, {1, 0, 0}}, {3, {1, 1, 0}},
      {4, {0, 0, 1}}, {5, {0, 1, 1}}, {6, {1, 0, 1}}, {7, {1, 1, 1}}};
  for (const auto& [rank, c] : expected) {
    EXPECT_EQ(mesh_coords(rank, dp, tp, pp), c) << "rank " << rank;
    EXPECT_EQ(mesh_world_rank(c, dp, tp, pp), rank);
  }
  EXPECT_EQ(mesh_group_ranks(5, MeshAxis::tp, dp, tp, pp), (std::vector<int>{4, 5}));
  EXPECT_EQ(mesh_group_ranks(5, MeshAxis::dp, dp, tp, pp), (std::vector<int>{5, 7}));
  EXPECT_EQ(mesh_group_ranks(5, MeshAxis::pp, dp, tp, pp), (std::vector<int>{1, 5}));
}

TEST(RankOrder, GroupsPartitionTheWorld) {
  for (auto [dp, tp, pp] : {std::tuple{3, 2, 2}, std::tuple{1, 4, 3}, std::tuple{5, 1, 2}}) {
    const int n = dp * tp * pp;
    for (MeshAxis axis : {MeshAxis::dp, MeshAxis::tp, MeshAxis::pp}) {
      std::set<int> covered;
      for (int r = 0; r < n; ++r) {
        const auto g = mesh_group_ranks(r, axis, dp, tp, pp);
        EXPECT_NE(std::find(g.begin(), g.end(), r), g.end());
        covered.insert(g.begin(), g.end());
        for (int member : g) EXPECT_EQ(mesh_group_ranks(member, axis, dp, tp, pp), g);
      }
      EXPECT_EQ(static_cast<int>(covered.size()), n);
    }
  }
}

TEST(LocalRank, OpenMpiThenSlurmThenDefault) {
  auto from = [](std::map<std::string, std::string> vars) {
    return discover_local_rank([vars](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    });
  };
  LocalRank ompi = from({{"OMPI_COMM_WORLD_LOCAL_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                         {"SLURM_LOCALID", "1"}});
  EXPECT_EQ(ompi.rank, 3);
  EXPECT_EQ(ompi.size, 4);
  EXPECT_EQ(ompi.source, "openmpi");

  LocalRank slurm = from({{"SLURM_LOCALID", "1"}, {"SLURM_NTASKS_PER_NODE", "2"}});
  EXPECT_EQ(slurm.rank, 1);
  EXPECT_EQ(slurm.size, 2);
  EXPECT_EQ(slurm.source, "slurm");

  LocalRank packed = from({{"SLURM_LOCALID", "0"}, {"SLURM_TASKS_PER_NODE", "4(x2),3"},
                           {"SLURM_NODEID", "2"}});
  EXPECT_EQ(packed.size, 3);
  packed = from({{"SLURM_LOCALID", "0"}, {"SLURM_TASKS_PER_NODE", "4(x2),3"}, {"SLURM_NODEID", "1"}});
  EXPECT_EQ(packed.size, 4);

  LocalRank none = from({});
  EXPECT_EQ(none.rank, 0);
  EXPECT_EQ(none.size, 1);
  EXPECT_EQ(none.source, "default");
}
