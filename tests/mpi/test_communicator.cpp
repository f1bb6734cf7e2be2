// MpiCommunicator and GradBuckets under mpirun -n 2 / -n 4 (ctest -L mpi).
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "tests/mpi/mpi_gtest_main.h"
#include "kernels/cpu/cast_bf16.h"
#include "parallel/grad_buckets.h"
#include "parallel/collectives.h"
#include "parallel/mpi_communicator.h"

using namespace tessera;

namespace {

int world_rank() { int r; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
int world_size() { int s; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }

// Positive values: no cancellation, so any summation order is within a few ulps.
std::vector<float> rand_vec(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(0.5f, 1.5f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> reference_sum(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  MPI_Allreduce(v.data(), out.data(), static_cast<int>(v.size()), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, double rtol = 1e-6) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_LE(std::fabs(a[i] - b[i]), rtol * std::fabs(b[i])) << "at " << i << ": " << a[i] << " vs " << b[i];
}

// Small chunk so the ring runs many chunks on small buffers.
MpiCommunicatorOptions ring_opts(int async_thread = -1) {
  MpiCommunicatorOptions o;
  o.ring_threshold_bytes = 0;
  o.chunk_bytes = 64;  // 16 floats per message
  o.async_thread = async_thread;
  return o;
}

const int64_t kCounts[] = {1, 3, 7, 16, 17, 63, 64, 1000, 4099};

}  // namespace

TEST(MpiCommunicator, RankSize) {
  MpiCommunicator c(MPI_COMM_WORLD);
  EXPECT_EQ(c.rank(), world_rank());
  EXPECT_EQ(c.size(), world_size());
}

TEST(MpiCommunicator, ThreadMultipleAvailable) {
  int provided;
  MPI_Query_thread(&provided);
  MpiCommunicator c(MPI_COMM_WORLD);
  EXPECT_EQ(c.async_uses_thread(), provided == MPI_THREAD_MULTIPLE);
}

TEST(MpiCommunicator, AllReduceRingMatchesMpi) {
  for (int thread : {0, -1}) {
    MpiCommunicator c(MPI_COMM_WORLD, ring_opts(thread));
    for (int64_t n : kCounts) {
      auto v = rand_vec(n, 100 + 7 * c.rank() + static_cast<uint32_t>(n));
      auto ref = reference_sum(v);
      auto a = v;
      c.all_reduce(a.data(), n);
      expect_close(a, ref);
      auto b = v;
      c.all_reduce_async(b.data(), n).wait();
      expect_close(b, ref);
      auto d = v;
      c.ring_all_reduce(d.data(), n);
      expect_close(d, ref);
    }
  }
}

TEST(MpiCommunicator, AllReduceSmallPathMatchesMpi) {
  MpiCommunicator c(MPI_COMM_WORLD);  // default threshold: these are all MPI_Allreduce
  for (int64_t n : kCounts) {
    auto v = rand_vec(n, 5 + c.rank());
    auto ref = reference_sum(v);
    c.all_reduce(v.data(), n);
    expect_close(v, ref);
  }
}

TEST(MpiCommunicator, ManyAsyncAllReducesInFlight) {
  for (int thread : {0, -1}) {
  MpiCommunicator c(MPI_COMM_WORLD, ring_opts(thread));
  std::vector<std::vector<float>> bufs, refs;
  for (int k = 0; k < 8; ++k) {
    bufs.push_back(rand_vec(100 + 37 * k, 1000 + 10 * k + c.rank()));
    refs.push_back(reference_sum(bufs.back()));
  }
  std::vector<CommRequest> reqs;
  for (auto& b : bufs) reqs.push_back(c.all_reduce_async(b.data(), static_cast<int64_t>(b.size())));
  while (!reqs.back().test()) {}
  for (auto& r : reqs) r.wait();
  for (size_t k = 0; k < bufs.size(); ++k) expect_close(bufs[k], refs[k]);
  }
}

// Without the helper thread, all_reduce_async is a queued state machine of the blocking
// algorithm: its result must be bit-identical to all_reduce's, and the same on every rank
// (mixed signs, so a different summation order would show).
TEST(MpiCommunicator, QueuedAsyncAllReduceBitIdentical) {
  for (int64_t chunk : {int64_t{64}, int64_t{4096}, int64_t{1} << 20}) {
    MpiCommunicatorOptions o;
    o.async_thread = 0;
    o.ring_threshold_bytes = 1024;  // below: MPI_Iallreduce; above: the ring
    o.chunk_bytes = chunk;
    MpiCommunicator c(MPI_COMM_WORLD, o);
    ASSERT_FALSE(c.async_uses_thread());
    for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{255}, int64_t{256}, int64_t{4099},
                      int64_t{100003}, int64_t{1} << 20}) {
      std::mt19937 g(17 + 1000 * c.rank() + static_cast<uint32_t>(n));
      std::normal_distribution<float> d(0.f, 1.f);
      std::vector<float> v(n);
      for (auto& x : v) x = d(g) * std::exp(d(g) * 3.f);
      auto a = v;
      c.all_reduce(a.data(), n);
      auto b = v;
      auto rq = c.all_reduce_async(b.data(), n);
      while (!rq.test()) {}
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), sizeof(float) * n)) << "n=" << n;
      auto r0 = a;  // rank 0's bits on every rank
      MPI_Bcast(r0.data(), static_cast<int>(n), MPI_FLOAT, 0, MPI_COMM_WORLD);
      ASSERT_EQ(0, std::memcmp(a.data(), r0.data(), sizeof(float) * n)) << "n=" << n;
    }
  }
}

// Several queued operations, partly progressed by test(), then a blocking collective
// (which completes the queue first, in issue order), then wait().
TEST(MpiCommunicator, QueuedAsyncThenBlocking) {
  MpiCommunicatorOptions o;
  o.async_thread = 0;
  o.ring_threshold_bytes = 256;
  o.chunk_bytes = 256;
  MpiCommunicator c(MPI_COMM_WORLD, o);
  std::vector<std::vector<float>> bufs, refs;
  for (int k = 0; k < 6; ++k) {
    bufs.push_back(rand_vec(10 + 1500 * k, 555 + 10 * k + c.rank()));
    refs.push_back(reference_sum(bufs.back()));
  }
  std::vector<CommRequest> reqs;
  for (auto& b : bufs) {
    reqs.push_back(c.all_reduce_async(b.data(), static_cast<int64_t>(b.size())));
    reqs.front().test();
  }
  auto x = rand_vec(3000, 9 + c.rank());
  auto xref = reference_sum(x);
  c.all_reduce(x.data(), 3000);
  for (auto& r : reqs) EXPECT_TRUE(r.test());
  for (auto& r : reqs) r.wait();
  expect_close(x, xref);
  for (size_t k = 0; k < bufs.size(); ++k) expect_close(bufs[k], refs[k]);
  // Requests left pending are completed by the destructor.
  auto y = rand_vec(5000, 3 + c.rank());
  auto yref = reference_sum(y);
  {
    MpiCommunicator d(MPI_COMM_WORLD, o);
    d.all_reduce_async(y.data(), 5000);
  }
  expect_close(y, yref);
}

TEST(MpiCommunicator, ReduceScatter) {
  for (int thread : {0, -1}) {
    MpiCommunicator c(MPI_COMM_WORLD, ring_opts(thread));
    const int p = c.size(), r = c.rank();
    for (int64_t n : kCounts) {
      auto v = rand_vec(n * p, 300 + r + static_cast<uint32_t>(n));
      auto full = reference_sum(v);
      std::vector<float> ref(full.begin() + r * n, full.begin() + (r + 1) * n);
      std::vector<float> out(n, -1.f);
      c.reduce_scatter(v.data(), out.data(), n);
      expect_close(out, ref);
      std::fill(out.begin(), out.end(), -1.f);
      c.reduce_scatter_async(v.data(), out.data(), n).wait();
      expect_close(out, ref);
      auto w = v;  // in place: result lands in this rank's own chunk
      c.reduce_scatter(w.data(), w.data() + r * n, n);
      expect_close(std::vector<float>(w.begin() + r * n, w.begin() + (r + 1) * n), ref);
    }
  }
}

TEST(MpiCommunicator, AllGather) {
  MpiCommunicator c(MPI_COMM_WORLD);
  const int p = c.size(), r = c.rank();
  for (int64_t n : kCounts) {
    std::vector<float> mine(n), ref(n * p), out(n * p, -1.f);
    for (int q = 0; q < p; ++q)
      for (int64_t i = 0; i < n; ++i) ref[q * n + i] = static_cast<float>(q * 100000 + i);
    std::copy(ref.begin() + r * n, ref.begin() + (r + 1) * n, mine.begin());
    c.all_gather(mine.data(), out.data(), n);
    EXPECT_EQ(out, ref);
    std::fill(out.begin(), out.end(), -1.f);
    c.all_gather_async(mine.data(), out.data(), n).wait();
    EXPECT_EQ(out, ref);
    std::vector<float> inplace(n * p, -1.f);
    std::copy(mine.begin(), mine.end(), inplace.begin() + r * n);
    c.all_gather(inplace.data() + r * n, inplace.data(), n);
    EXPECT_EQ(inplace, ref);
  }
}

TEST(MpiCommunicator, Broadcast) {
  MpiCommunicator c(MPI_COMM_WORLD);
  for (int root = 0; root < c.size(); ++root) {
    auto ref = rand_vec(1001, 77 + root);
    auto v = c.rank() == root ? ref : std::vector<float>(1001, 0.f);
    c.broadcast(v.data(), 1001, root);
    EXPECT_EQ(v, ref);
    auto w = c.rank() == root ? ref : std::vector<float>(1001, 0.f);
    c.broadcast_async(w.data(), 1001, root).wait();
    EXPECT_EQ(w, ref);
  }
}

// The agreements the training loop makes (a loss, a stop signal, the first error, a run
// id) over MPI, against values computed here.
TEST(MpiCommunicator, TypedAgreements) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  const int r = comm.rank(), p = comm.size();
  EXPECT_EQ(all_reduce_value<int32_t>(comm, r, ReduceOp::max), p - 1);
  EXPECT_EQ(all_reduce_value<int64_t>(comm, int64_t{1} << 40, ReduceOp::sum), p * (int64_t{1} << 40));
  EXPECT_EQ(all_reduce_value<double>(comm, r + 0.25, ReduceOp::min), 0.25);
  EXPECT_EQ(all_reduce_value<float>(comm, -float(r), ReduceOp::min), -float(p - 1));
  EXPECT_EQ(broadcast_string(comm, r == p - 1 ? "run-42" : "", p - 1), "run-42");
  const auto all = all_gather_strings(comm, std::string(r + 1, char('a' + r)));
  for (int q = 0; q < p; q++) EXPECT_EQ(all[q], std::string(q + 1, char('a' + q)));
  EXPECT_EQ(first_error_of_all(comm, r == p - 1 ? "disk full" : ""), "disk full");
  EXPECT_EQ(first_error_of_all(comm, ""), "");
}

// With MPI_ERRORS_RETURN (the command line sets it), a refused MPI call surfaces as a
// CommError — a tessera::Error, so the command line prints one line and exits 2 — naming
// the communicator and the call.
TEST(MpiCommunicator, FailedCallThrowsCommError) {
  MPI_Comm returning;
  MPI_Comm_dup(MPI_COMM_WORLD, &returning);
  MPI_Comm_set_errhandler(returning, MPI_ERRORS_RETURN);
  {
    MpiCommunicator comm(returning);
    const float x = 1;
    try {
      comm.send(&x, 1, comm.size() + 5);  // no such rank
      ADD_FAILURE() << "a send to a rank that does not exist succeeded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("communication failed in MpiCommunicator: MPI_Send ("),
                std::string::npos)
          << e.what();
      EXPECT_NE(dynamic_cast<const CommError*>(&e), nullptr);
    }
  }
  MPI_Comm_free(&returning);
}

TEST(MpiCommunicator, SendRecvRing) {
  MpiCommunicator c(MPI_COMM_WORLD);
  const int p = c.size(), r = c.rank();
  const int right = (r + 1) % p, left = (r - 1 + p) % p;
  auto mine = rand_vec(513, 900 + r);
  auto expect = rand_vec(513, 900 + left);
  std::vector<float> got(513, 0.f);
  auto rq = c.recv_async(got.data(), 513, left, 3);
  auto sq = c.send_async(mine.data(), 513, right, 3);
  sq.wait();
  rq.wait();
  EXPECT_EQ(got, expect);
  // Blocking: even ranks send first.
  std::fill(got.begin(), got.end(), 0.f);
  if (p % 2 == 0) {
    if (r % 2 == 0) { c.send(mine.data(), 513, right, 4); c.recv(got.data(), 513, left, 4); }
    else { c.recv(got.data(), 513, left, 4); c.send(mine.data(), 513, right, 4); }
    EXPECT_EQ(got, expect);
  }
}

// ------------------------------------------------------------------ bf16 all-reduce

namespace {

float round_bf16(float x) { return kernels::bf16_to_fp32(kernels::fp32_to_bf16(x)); }

// Every rank's input, known to every rank: rank q's is inputs[q]. Uniform in [0.5, 1.5)
// (positive; almost none of them bf16 numbers) or, with mixed, signed over many binades.
std::vector<std::vector<float>> all_inputs(int p, int64_t n, uint32_t seed, bool mixed = false) {
  std::vector<std::vector<float>> in;
  for (int q = 0; q < p; ++q) {
    in.push_back(rand_vec(n, seed + 7919 * static_cast<uint32_t>(q)));
    if (mixed) {
      std::mt19937 g(seed + 31 * static_cast<uint32_t>(q));
      std::normal_distribution<float> d(0.f, 1.f);
      for (auto& x : in.back()) x = d(g) * std::exp(d(g) * 3.f);
    }
  }
  return in;
}

// The bf16 ring all-reduce, simulated: chunks of p segments of chunk_bytes / 2 elements,
// segment k of a chunk (elements [len*k/p, len*(k+1)/p)) summed in ring order k, k+1, ...,
// k-1, each input and each partial sum rounded to bf16 (nearest even).
std::vector<float> simulate_bf16_ring(const std::vector<std::vector<float>>& in,
                                      int64_t chunk_bytes) {
  const int p = static_cast<int>(in.size());
  const int64_t n = static_cast<int64_t>(in[0].size());
  const int64_t block = std::max<int64_t>(1, chunk_bytes / 2) * p;
  std::vector<float> out(n);
  for (int64_t off = 0; off < n; off += block) {
    const int64_t len = std::min(block, n - off);
    for (int k = 0; k < p; ++k)
      for (int64_t i = off + len * k / p; i < off + len * (k + 1) / p; ++i) {
        float acc = round_bf16(in[k][i]);
        for (int j = 1; j < p; ++j) acc = round_bf16(round_bf16(in[(k + j) % p][i]) + acc);
        out[i] = acc;
      }
  }
  return out;
}

void expect_bits(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(0, std::memcmp(&got[i], &want[i], 4))
        << what << " at " << i << " of " << got.size() << ": " << got[i] << " vs " << want[i];
}

// Every rank holds rank 0's bits.
void expect_same_on_every_rank(const std::vector<float>& v) {
  if (v.empty()) return;
  auto r0 = v;
  MPI_Bcast(r0.data(), static_cast<int>(v.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  ASSERT_EQ(0, std::memcmp(v.data(), r0.data(), 4 * v.size())) << "differs from rank 0";
}

const int64_t kBf16Counts[] = {0, 1, 3, 17, 127, 4099};

}  // namespace

// Blocking, queued (no helper thread) and helper-thread forms: exactly the simulated ring,
// on every rank; rounded (every element a bf16 number, unlike the fp32 all-reduce) and
// within the bound of p successive bf16 roundings of the exact sum.
TEST(MpiCommunicatorBf16, AllReduceMatchesSimulatedRing) {
  for (int64_t chunk : {int64_t{64}, int64_t{1} << 20}) {  // 32 bf16 per message: many chunks
    for (int thread : {0, -1}) {
      MpiCommunicatorOptions o = ring_opts(thread);
      o.chunk_bytes = chunk;
      MpiCommunicator c(MPI_COMM_WORLD, o);
      const int p = c.size();
      const double bound = std::pow(1.0 + std::ldexp(1.0, -8), p) - 1.0;
      for (int64_t n : kBf16Counts) {
        const auto in = all_inputs(p, n, 11 + static_cast<uint32_t>(n));
        const auto ref = simulate_bf16_ring(in, chunk);
        auto a = in[c.rank()];
        c.all_reduce_bf16(a.data(), n);
        expect_bits(a, ref, "blocking");
        auto b = in[c.rank()];
        auto rq = c.all_reduce_bf16_async(b.data(), n);
        while (!rq.test()) {}
        expect_bits(b, ref, "async");
        expect_same_on_every_rank(a);
        auto f = in[c.rank()];
        c.all_reduce(f.data(), n);
        int64_t differs = 0;
        double mean_rel = 0;
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(a[i], round_bf16(a[i])) << "not a bf16 number at " << i;
          differs += a[i] != f[i];
          double exact = 0;
          for (int q = 0; q < p; ++q) exact += in[q][i];
          const double rel = std::fabs(a[i] - exact) / exact;
          ASSERT_LE(rel, bound) << "at " << i << ": " << a[i] << " vs exact " << exact;
          mean_rel += rel / static_cast<double>(n);
        }
        if (n >= 17) {
          EXPECT_GT(differs, n / 2) << "n=" << n << ": the bf16 sum should differ from fp32's";
          EXPECT_LE(mean_rel, std::ldexp(1.0, -8)) << "n=" << n;
        }
      }
    }
  }
}

// Signed values over many binades (cancellation: the order of the roundings shows).
TEST(MpiCommunicatorBf16, MixedSignsBitExact) {
  MpiCommunicatorOptions o = ring_opts(0);
  o.chunk_bytes = 256;
  MpiCommunicator c(MPI_COMM_WORLD, o);
  for (int64_t n : {int64_t{5}, int64_t{1000}, int64_t{100003}}) {
    const auto in = all_inputs(c.size(), n, 3, /*mixed=*/true);
    const auto ref = simulate_bf16_ring(in, o.chunk_bytes);
    auto a = in[c.rank()];
    c.all_reduce_bf16(a.data(), n);
    expect_bits(a, ref, "blocking");
    auto b = in[c.rank()];
    c.all_reduce_bf16_async(b.data(), n).wait();
    expect_bits(b, ref, "async");
  }
}

// Queued fp32 and bf16 operations interleaved complete in order with their own results.
TEST(MpiCommunicatorBf16, InterleavedWithFp32Queue) {
  MpiCommunicatorOptions o = ring_opts(0);
  MpiCommunicator c(MPI_COMM_WORLD, o);
  const int p = c.size();
  std::vector<std::vector<float>> bufs, want;
  std::vector<CommRequest> reqs;
  for (int k = 0; k < 6; ++k) {
    const int64_t n = 50 + 301 * k;
    const auto in = all_inputs(p, n, 500 + static_cast<uint32_t>(k));
    bufs.push_back(in[c.rank()]);
    want.push_back(k % 2 ? simulate_bf16_ring(in, o.chunk_bytes) : reference_sum(in[c.rank()]));
  }
  for (int k = 0; k < 6; ++k) {
    float* b = bufs[k].data();
    const auto n = static_cast<int64_t>(bufs[k].size());
    reqs.push_back(k % 2 ? c.all_reduce_bf16_async(b, n) : c.all_reduce_async(b, n));
  }
  for (auto& r : reqs) r.wait();
  for (int k = 0; k < 6; ++k) {
    if (k % 2)
      expect_bits(bufs[k], want[k], "bf16");
    else
      expect_close(bufs[k], want[k]);
  }
}

TEST(MpiCommunicatorBf16, OneRankRoundsToBf16) {
  MPI_Comm self;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank(), 0, &self);
  {
    MpiCommunicator c(self);
    auto v = rand_vec(33, 8);
    auto a = v;
    c.all_reduce_bf16(a.data(), 33);
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(a[i], round_bf16(v[i]));
    auto b = v;
    c.all_reduce_bf16_async(b.data(), 33).wait();
    EXPECT_EQ(a, b);
  }
  MPI_Comm_free(&self);
}

// ------------------------------------------------------------------ GradBuckets

namespace {

// Parameters laid out contiguously in forward order; ready order = reverse.
std::vector<ParamSpan> layout(const std::vector<int64_t>& sizes) {
  std::vector<ParamSpan> fwd;
  int64_t off = 0;
  for (auto s : sizes) { fwd.push_back({off, s}); off += s; }
  std::reverse(fwd.begin(), fwd.end());
  return fwd;
}

}  // namespace

TEST(GradBuckets, BucketsAreContiguousAndBounded) {
  MpiCommunicator c(MPI_COMM_WORLD);
  std::vector<float> g(1000);
  auto params = layout({100, 300, 50, 50, 500});
  GradBuckets gb(c, g.data(), params, 400.0 * 4 / (1024 * 1024));  // 400 floats
  // ready order: 500 | 50 50 | 300 | 100  (500 alone exceeds the cap; 50+50+300 = 400)
  ASSERT_EQ(gb.buckets().size(), 3u);
  EXPECT_EQ(gb.buckets()[0].offset, 500);
  EXPECT_EQ(gb.buckets()[0].numel, 500);
  EXPECT_EQ(gb.buckets()[1].offset, 100);
  EXPECT_EQ(gb.buckets()[1].numel, 400);
  EXPECT_EQ(gb.buckets()[2].offset, 0);
  EXPECT_EQ(gb.buckets()[2].numel, 100);
}

TEST(GradBuckets, RejectsNonContiguous) {
  MpiCommunicator c(MPI_COMM_WORLD);
  std::vector<float> g(1000);
  std::vector<ParamSpan> params = {{0, 10}, {20, 10}};
  EXPECT_THROW(GradBuckets(c, g.data(), params, 1.0), std::invalid_argument);
}

TEST(GradBuckets, MatchesOneAllReduce) {
  const std::vector<int64_t> sizes = {768, 50257, 3, 2304, 768, 1, 4096, 17, 3072, 768, 999, 12};
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  for (int thread : {0, -1}) {
    MpiCommunicatorOptions o;
    o.async_thread = thread;
    o.ring_threshold_bytes = 4096;  // exercise both paths
    o.chunk_bytes = 4096;
    MpiCommunicator c(MPI_COMM_WORLD, o);
    const int p = c.size();
    auto params = layout(sizes);
    for (double mb : {0.001, 0.01, 0.05, 1.0}) {
      for (int order = 0; order < 3; ++order) {
        for (bool average : {true, false}) {
          auto v = rand_vec(total, 4242 + c.rank() * 31 + order);
          auto ref = reference_sum(v);
          if (average) for (auto& x : ref) x /= static_cast<float>(p);
          GradBuckets gb(c, v.data(), params, mb, average);
          std::vector<int> idx(params.size());
          std::iota(idx.begin(), idx.end(), 0);
          // order 0: backward order; 1: per-rank random order; 2: forward order
          if (order == 1) std::shuffle(idx.begin(), idx.end(), std::mt19937(c.rank() * 13 + 1));
          if (order == 2) std::reverse(idx.begin(), idx.end());
          for (int i : idx) gb.mark_ready(i);
          gb.finish();
          expect_close(v, ref, 1e-6);
          // Reusable for the next step.
          auto v2 = rand_vec(total, 99 + c.rank());
          auto ref2 = reference_sum(v2);
          if (average) for (auto& x : ref2) x /= static_cast<float>(p);
          std::copy(v2.begin(), v2.end(), v.begin());
          for (int i = static_cast<int>(params.size()) - 1; i >= 1; --i) gb.mark_ready(i);  // 0 left unmarked
          gb.finish();
          expect_close(v, ref2, 1e-6);
        }
      }
    }
  }
}

// bf16 buckets: each bucket is exactly the simulated bf16 ring over its range (so bucket
// boundaries and chunks inside a bucket are where they should be), then averaged; a
// partial set of marked parameters and a second step as well.
TEST(GradBuckets, Bf16BucketsMatchSimulatedRing) {
  const std::vector<int64_t> sizes = {768, 5025, 3, 2304, 768, 1, 4096, 17, 999, 12};
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  for (int thread : {0, -1}) {
    MpiCommunicatorOptions o = ring_opts(thread);
    o.chunk_bytes = 1024;
    MpiCommunicator c(MPI_COMM_WORLD, o);
    const int p = c.size();
    const auto params = layout(sizes);
    for (double mb : {0.001, 0.02, 1.0}) {  // 262 floats (many buckets), 5242, one bucket
      for (bool average : {true, false}) {
        std::vector<float> g(total);
        GradBuckets gb(c, g.data(), params, mb, average, ReduceIn::bf16);
        if (mb == 1.0) {
          ASSERT_EQ(gb.buckets().size(), 1u);
        }
        if (mb == 0.001) {
          ASSERT_GT(gb.buckets().size(), 5u);
        }
        for (int pass = 0; pass < 2; ++pass) {  // two steps; in the second, parameter 0
          const auto in = all_inputs(p, total, 77 + static_cast<uint32_t>(pass));  // unmarked
          std::copy(in[c.rank()].begin(), in[c.rank()].end(), g.begin());
          std::vector<int> idx(params.size());
          std::iota(idx.begin(), idx.end(), 0);
          std::shuffle(idx.begin(), idx.end(), std::mt19937(c.rank() * 13 + 1));
          for (int i : idx)
            if (pass == 0 || i != 0) gb.mark_ready(i);
          gb.finish();
          std::vector<float> want(total);
          for (const auto& b : gb.buckets()) {
            std::vector<std::vector<float>> slice;
            for (const auto& v : in)
              slice.emplace_back(v.begin() + b.offset, v.begin() + b.offset + b.numel);
            auto sum = simulate_bf16_ring(slice, o.chunk_bytes);
            std::copy(sum.begin(), sum.end(), want.begin() + b.offset);
          }
          if (average)
            for (auto& x : want) x *= 1.0f / static_cast<float>(p);
          expect_bits(g, want, "buckets");
        }
      }
    }
  }
}

TEST(GradBuckets, DoubleMarkThrows) {
  MpiCommunicator c(MPI_COMM_WORLD);
  std::vector<float> g(20, 1.f);
  GradBuckets gb(c, g.data(), layout({10, 10}), 1.0);
  gb.mark_ready(0);
  EXPECT_THROW(gb.mark_ready(0), std::logic_error);
  gb.mark_ready(1);
  gb.finish();
}

int main(int argc, char** argv) { return run_mpi_gtests(argc, argv, MPI_THREAD_MULTIPLE); }
