// The mesh under mpirun: rank order, group membership and communicator ranks for every
// layout of the job's world size, and an invalid layout failing identically on every rank.
// Registered in ctest at 4 ranks and at 8 ranks (tests/CMakeLists.txt, label mpi); a
// layout whose size differs from the job's is skipped.
//
// Every test runs the same sequence of collectives on every rank whatever the assertions
// find (EXPECT, never ASSERT, between collectives), so a failure cannot hang the job.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "base/error.h"
#include "parallel/mesh.h"

using namespace tessera;

namespace {

int world_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

LayoutSpec spec(int dp, int tp, int pp) {
  LayoutSpec l;
  l.dp = dp, l.tp = tp, l.pp = pp;
  l.n_head = 4, l.n_embd = 128, l.n_layer = 4;
  l.micro_batch = 1;
  l.global_batch = 8;
  return l;
}

// All world ranks of `comm`, in the order of their rank in it.
std::vector<int> members(MPI_Comm comm) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  std::vector<int> out(n);
  const int me = world_rank();
  MPI_Allgather(&me, 1, MPI_INT, out.data(), 1, MPI_INT, comm);
  return out;
}

class MeshLayout : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(MeshLayout, RankOrderAndGroups) {
  const auto [dp, tp, pp] = GetParam();
  if (dp * tp * pp != world_size()) GTEST_SKIP() << "needs " << dp * tp * pp << " ranks";
  const Mesh mesh(MPI_COMM_WORLD, spec(dp, tp, pp));
  const int me = world_rank();

  // Megatron order: tp fastest, then dp, then pp.
  EXPECT_EQ(mesh.world_rank(), me);
  EXPECT_EQ(mesh.world_size(), dp * tp * pp);
  EXPECT_EQ(mesh.tp_rank(), me % tp);
  EXPECT_EQ(mesh.dp_rank(), (me / tp) % dp);
  EXPECT_EQ(mesh.pp_rank(), me / (dp * tp));
  EXPECT_EQ(me, mesh.pp_rank() * dp * tp + mesh.dp_rank() * tp + mesh.tp_rank());

  for (MeshAxis axis : {MeshAxis::tp, MeshAxis::dp, MeshAxis::pp}) {
    const char* name = axis == MeshAxis::tp ? "tp" : axis == MeshAxis::dp ? "dp" : "pp";
    const MPI_Comm comm = mesh.comm(axis);
    const std::vector<int> expected = mesh_group_ranks(me, axis, dp, tp, pp);
    const int coord = axis == MeshAxis::tp ? mesh.tp_rank()
                      : axis == MeshAxis::dp ? mesh.dp_rank()
                                             : mesh.pp_rank();
    int size = 0, rank = -1;
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    EXPECT_EQ(size, static_cast<int>(expected.size())) << name;
    EXPECT_EQ(rank, coord) << name;
    // The all-reduce of world ranks in the group equals the expected members' sum ...
    int sum = 0;
    MPI_Allreduce(&me, &sum, 1, MPI_INT, MPI_SUM, comm);
    EXPECT_EQ(sum, std::accumulate(expected.begin(), expected.end(), 0)) << name;
    // ... and the members themselves, in group-rank order, are the expected ones.
    EXPECT_EQ(members(comm), expected) << name;
  }

  // Pipeline neighbours: same dp and tp coordinates, one stage before / after.
  const int prev = mesh.prev_stage_world_rank(), next = mesh.next_stage_world_rank();
  EXPECT_EQ(prev, mesh.pp_rank() == 0 ? -1 : me - dp * tp);
  EXPECT_EQ(next, mesh.pp_rank() == pp - 1 ? -1 : me + dp * tp);
  // A message passed one stage down arrives from the expected rank.
  int received = -1;
  MPI_Sendrecv(&me, 1, MPI_INT, next < 0 ? MPI_PROC_NULL : next, 7, &received, 1, MPI_INT,
               prev < 0 ? MPI_PROC_NULL : prev, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  EXPECT_EQ(received, prev);

  EXPECT_GE(mesh.local_rank(), 0);
  EXPECT_GT(mesh.local_size(), mesh.local_rank());
  EXPECT_EQ(mesh.local().source, "openmpi");  // mpirun sets OMPI_COMM_WORLD_LOCAL_RANK
}

std::string layout_name(const ::testing::TestParamInfo<std::tuple<int, int, int>>& info) {
  const auto [dp, tp, pp] = info.param;
  return "dp" + std::to_string(dp) + "_tp" + std::to_string(tp) + "_pp" + std::to_string(pp);
}

INSTANTIATE_TEST_SUITE_P(Layouts, MeshLayout,
                         ::testing::Values(std::tuple{4, 1, 1}, std::tuple{1, 4, 1},
                                           std::tuple{1, 1, 4}, std::tuple{2, 2, 1},
                                           std::tuple{2, 1, 2}, std::tuple{1, 2, 2},
                                           std::tuple{2, 2, 2}),
                         layout_name);

// Every rank throws the same message before any split, and the job goes on afterwards
// (no rank is stuck in a collective): the barrier below completes.
void expect_same_failure_everywhere(const LayoutSpec& l, const std::string& needle) {
  std::string msg;
  try {
    Mesh mesh(MPI_COMM_WORLD, l);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find(needle), std::string::npos) << "got: '" << msg << "'";
  // Same message on every rank: compare lengths and bytes with rank 0's.
  int len = static_cast<int>(msg.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::string root(len, '\0');
  if (world_rank() == 0) root = msg;
  MPI_Bcast(root.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  EXPECT_EQ(msg, root);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(MeshInvalid, WorldSizeMismatchFailsOnEveryRank) {
  const int n = world_size();
  expect_same_failure_everywhere(spec(2 * n, 1, 1),
                                 "= " + std::to_string(2 * n) + " ranks, but the job has " +
                                     std::to_string(n) + " MPI ranks");
}

TEST(MeshInvalid, FewerLayersThanStagesFailsOnEveryRank) {
  LayoutSpec l = spec(1, 1, world_size());
  l.n_layer = world_size() - 1;
  expect_same_failure_everywhere(l, "is fewer than parallel.pp");
}

TEST(MeshInvalid, HeadsNotDivisibleFailsOnEveryRank) {
  LayoutSpec l = spec(1, world_size(), 1);
  l.n_head = world_size() + 1;
  expect_same_failure_everywhere(l, "model.n_head = ");
}

// On ranks other than 0, print only failures, prefixed by the rank.
class FailuresOnly : public ::testing::EmptyTestEventListener {
 public:
  explicit FailuresOnly(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailuresOnly(rank));
  }
  int local = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
