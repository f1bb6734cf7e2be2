// MpiCommunicator's collectives on allocate_shared memory (parallel/shared_memory_collectives.h)
// under mpirun -n 2 / 3 / 4 (ctest -L mpi), against MPI_Allreduce of the same values.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "tests/mpi/mpi_gtest_main.h"
#include "parallel/grad_buckets.h"
#include "parallel/mpi_communicator.h"

using namespace tessera;

namespace {

// Integers in floats: every summation order gives the exact sum, so results compare
// exactly with MPI_Allreduce's.
void fill_ints(float* p, int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(-1000, 1000);
  for (int64_t i = 0; i < n; ++i) p[i] = (float)d(g);
}

std::vector<float> mpi_sum(const float* p, int64_t n) {
  std::vector<float> out(n);
  MPI_Allreduce(p, out.data(), (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

// Rank 0's bytes of p[0..n) equal this rank's.
bool same_bits_as_rank0(const float* p, int64_t n) {
  std::vector<float> r0(p, p + n);
  MPI_Bcast(r0.data(), (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
  return std::memcmp(r0.data(), p, sizeof(float) * n) == 0;
}

MpiCommunicatorOptions opts(int async_thread) {
  MpiCommunicatorOptions o;
  o.async_thread = async_thread;
  return o;
}

const int64_t kTotal = 100003;

}  // namespace

TEST(SharedMemory, AllocationsAreZeroedSeparatePerRankAndIndependent) {
  MpiCommunicator c(MPI_COMM_WORLD);
  std::string why;
  float* s = c.allocate_shared(kTotal, &why);
  ASSERT_NE(s, nullptr) << why;
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(s) % 64, 0u);  // cache-line aligned
  for (int64_t i = 0; i < kTotal; ++i) ASSERT_EQ(s[i], 0.f) << i;
  s[7] = (float)c.rank();
  c.barrier();
  EXPECT_EQ(s[7], (float)c.rank());  // no peer wrote into this rank's copy
  // A second allocation: its own collectives, the first one's contents untouched.
  float* t = c.allocate_shared(100, &why);
  ASSERT_NE(t, nullptr) << why;
  std::fill(t, t + 100, 2.f);
  c.all_reduce(t, 100);
  EXPECT_EQ(t[99], 2.f * (float)c.size());
  EXPECT_EQ(s[7], (float)c.rank());
}

TEST(SharedMemory, AllReduceExactAndBitIdenticalWithUntouchedSurroundings) {
  for (int thread : {0, -1}) {
    MpiCommunicator c(MPI_COMM_WORLD, opts(thread));
    std::string why;
    float* s = c.allocate_shared(kTotal, &why);
    ASSERT_NE(s, nullptr) << why;
    // Ranges: tiny (fewer elements than ranks), unaligned, not a multiple of the ranks or
    // of a cache line, the whole allocation.
    const std::pair<int64_t, int64_t> ranges[] = {{0, 1},     {5, 3},       {17, 33},
                                                  {100, 4099}, {1, 65537},   {0, kTotal}};
    for (int blocking : {1, 0}) {
      for (auto [off, n] : ranges) {
        fill_ints(s, kTotal, 11 + 7 * c.rank() + (uint32_t)n);
        const std::vector<float> before(s, s + kTotal);
        const auto ref = mpi_sum(s + off, n);
        if (blocking) {
          c.all_reduce(s + off, n);
        } else {
          auto rq = c.all_reduce_async(s + off, n);
          while (!rq.test()) {}
        }
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(s[off + i], ref[i]) << "off " << off << " i " << i;
        for (int64_t i = 0; i < off; ++i) ASSERT_EQ(s[i], before[i]);
        for (int64_t i = off + n; i < kTotal; ++i) ASSERT_EQ(s[i], before[i]);
      }
    }
    // Real-valued data: the sum's bits are the same on every rank.
    std::mt19937 g(5 + c.rank());
    std::normal_distribution<float> d(0.f, 1.f);
    for (int64_t i = 0; i < kTotal; ++i) s[i] = d(g) * std::exp(3.f * d(g));
    c.all_reduce(s, kTotal);
    EXPECT_TRUE(same_bits_as_rank0(s, kTotal));
  }
}

// Queued async operations on shared and private memory, interleaved, partly progressed,
// then a blocking collective (which completes the queue in issue order) and wait().
TEST(SharedMemory, QueueMixesSharedAndRingOperations) {
  MpiCommunicator c(MPI_COMM_WORLD, opts(0));
  std::string why;
  float* s = c.allocate_shared(kTotal, &why);
  ASSERT_NE(s, nullptr) << why;
  fill_ints(s, kTotal, 40 + c.rank());
  const auto shared_ref = mpi_sum(s, kTotal);
  std::vector<std::vector<float>> priv;
  std::vector<std::vector<float>> priv_ref;
  for (int k = 0; k < 3; ++k) {
    priv.emplace_back(70000 + 1000 * k);
    fill_ints(priv.back().data(), (int64_t)priv.back().size(), 90 + 10 * k + c.rank());
    priv_ref.push_back(mpi_sum(priv.back().data(), (int64_t)priv.back().size()));
  }
  std::vector<CommRequest> reqs;
  const int64_t cut[] = {0, 30000, 60001, kTotal};
  for (int k = 0; k < 3; ++k) {
    reqs.push_back(c.all_reduce_async(s + cut[k], cut[k + 1] - cut[k]));
    reqs.push_back(c.all_reduce_async(priv[k].data(), (int64_t)priv[k].size()));
    reqs.front().test();
  }
  std::vector<float> x(5000);
  fill_ints(x.data(), 5000, 3 + c.rank());
  const auto xref = mpi_sum(x.data(), 5000);
  c.all_reduce(x.data(), 5000);
  for (auto& r : reqs) EXPECT_TRUE(r.test());
  for (auto& r : reqs) r.wait();
  EXPECT_EQ(x, xref);
  EXPECT_EQ(std::vector<float>(s, s + kTotal), shared_ref);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(priv[k], priv_ref[k]);
}

// Reduce-scatter and all-gather, each in place and to / from this rank's private memory.
TEST(SharedMemory, ReduceScatterAndAllGather) {
  MpiCommunicator c(MPI_COMM_WORLD);
  const int p = c.size(), r = c.rank();
  std::string why;
  float* s = c.allocate_shared(kTotal, &why);
  ASSERT_NE(s, nullptr) << why;
  for (int64_t m : {int64_t{1}, int64_t{17}, kTotal / p}) {
    fill_ints(s, kTotal, 300 + r + (uint32_t)m);
    const auto full = mpi_sum(s, m * p);
    const std::vector<float> sum_r(full.begin() + r * m, full.begin() + (r + 1) * m);
    std::vector<float> out(m, -1.f);
    c.reduce_scatter(s, out.data(), m);
    EXPECT_EQ(out, sum_r) << "m=" << m;
    c.reduce_scatter(s, s + r * m, m);  // in place: into this rank's own slice
    EXPECT_EQ(std::vector<float>(s + r * m, s + (r + 1) * m), sum_r) << "m=" << m;

    std::vector<float> mine(m);  // rank r's slice: r * 1e6 + index
    for (int64_t i = 0; i < m; ++i) mine[i] = (float)(r * 1000000 + i);
    std::vector<float> gathered(p * m);
    for (int q = 0; q < p; ++q)
      for (int64_t i = 0; i < m; ++i) gathered[q * m + i] = (float)(q * 1000000 + i);
    std::fill(s, s + kTotal, -1.f);
    std::copy(mine.begin(), mine.end(), s + r * m);
    c.all_gather(s + r * m, s, m);  // in place
    EXPECT_EQ(std::vector<float>(s, s + p * m), gathered) << "m=" << m;
    if (p * m < kTotal) {
      EXPECT_EQ(s[p * m], -1.f);  // nothing written past the end
    }
    std::fill(s, s + kTotal, -1.f);
    c.all_gather(mine.data(), s, m);  // from this rank's private memory
    EXPECT_EQ(std::vector<float>(s, s + p * m), gathered) << "m=" << m;
  }
}

// GradBuckets over a gradient buffer in shared memory: two steps, the second with one
// parameter never marked (reduced by finish()).
TEST(SharedMemory, GradBucketsMatchOneAllReduce) {
  const std::vector<int64_t> sizes = {768, 50257, 3, 2304, 768, 1, 4096, 17, 3072, 999};
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  std::vector<ParamSpan> spans;
  for (int64_t off = 0; int64_t n : sizes) spans.push_back({off, n}), off += n;
  std::reverse(spans.begin(), spans.end());
  MpiCommunicator c(MPI_COMM_WORLD, opts(0));
  std::string why;
  float* g = c.allocate_shared(total, &why);
  ASSERT_NE(g, nullptr) << why;
  GradBuckets buckets(c, g, spans, /*bucket_mb=*/0.05, /*average=*/false);
  for (int step = 0; step < 2; ++step) {
    fill_ints(g, total, 500 + 3 * c.rank() + step);
    const auto ref = mpi_sum(g, total);
    for (int i = 0; i < (int)spans.size() - step; ++i) buckets.mark_ready(i);
    buckets.finish();
    EXPECT_EQ(std::vector<float>(g, g + total), ref) << "step " << step;
  }
}

TEST(SharedMemory, TooLargeIsRefusedWithTheReason) {
  MpiCommunicator c(MPI_COMM_WORLD);
  std::string why;
  EXPECT_EQ(c.allocate_shared(int64_t{1} << 42, &why), nullptr);  // 16 TiB per rank
  EXPECT_NE(why.find("/dev/shm"), std::string::npos) << why;
  // The communicator still works, and can still be given shared memory.
  float* s = c.allocate_shared(64, &why);
  ASSERT_NE(s, nullptr) << why;
  std::fill(s, s + 64, 1.f);
  c.all_reduce(s, 64);
  EXPECT_EQ(s[63], (float)c.size());
}

int main(int argc, char** argv) { return run_mpi_gtests(argc, argv, MPI_THREAD_MULTIPLE); }
