// The NCCL communicator's tests: every operation of the Communicator interface with real
// arithmetic on device buffers (uploaded and downloaded as on a GPU), the id handed out by
// rank 0, groups from their own ids, and a failure that aborts the communicator. The
// expected values are computed here on the host from what every rank holds,
// independently of the communicator. Built twice, with two mains (tests/nccl/*_main.cpp):
//   mpi_nccl_tests   under mpirun -n 1 / 2 / 4, on the NCCL and CUDA emulators (CI);
//   gpu_nccl_tests   on real NCCL without MPI: processes that share the id through a file
//                    (scripts/gpu-check.sh starts 1, 2 and 4 of them on one GPU).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/cuda/runtime.h"
#include "parallel/collectives.h"
#include "parallel/nccl_communicator.h"
#include "tests/nccl/test_world.h"

using namespace tessera;
using kernels::cuda::DeviceArray;

namespace {

Communicator& world() { return test_world(); }

// Rank r's value at index i: exact in fp32 and bf16 (small multiples of 1/4), so sums in
// any order are exact too.
float value(int rank, int64_t i) { return (float)((rank + 1) * (i % 7) - 3 * (i % 5)) * 0.25f; }

std::vector<float> values(int rank, int64_t n, int64_t offset = 0) {
  std::vector<float> v((size_t)n);
  for (int64_t i = 0; i < n; i++) v[(size_t)i] = value(rank, offset + i);
  return v;
}

float sum_over_ranks(int64_t i, int ranks) {
  float s = 0;
  for (int r = 0; r < ranks; r++) s += value(r, i);
  return s;
}

// "" when got(i) == expected(i) for every i in [begin, end), else the first difference.
// Not an ASSERT: a test that returned early on one rank would leave the others waiting
// in the next collective.
template <typename Got, typename Expected>
std::string first_mismatch(int64_t begin, int64_t end, Got got, Expected expected) {
  for (int64_t i = begin; i < end; i++)
    if (got(i) != expected(i))
      return "at " + std::to_string(i) + ": " + std::to_string(got(i)) + " vs " +
             std::to_string(expected(i));
  return "";
}

const int64_t kCounts[] = {1, 7, 64, 1000, 4099};

// `call` on an aborted communicator throws, saying so.
template <typename Call>
void expect_refused_after_abort(Call call) {
  try {
    call();
    ADD_FAILURE() << "an aborted communicator should refuse";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted after an earlier failure"), std::string::npos)
        << e.what();
  }
}

// What nccl.synchronize() throws within `seconds`, polling; "" if nothing. The host does
// not wait for NCCL's float operations, so a failure found after they were issued (by the
// communicator's watchdog thread) surfaces at the next call or at synchronize().
std::string failure_within(Communicator& nccl, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      nccl.synchronize();
    } catch (const CommError& e) {
      return e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "";
}

// The message the watchdog gives NcclOptions::on_stuck (from its thread), for the test's.
class StuckMessage {
 public:
  void install(NcclOptions& options) {
    options.on_stuck = [this](const std::string& message) {
      std::lock_guard<std::mutex> lock(mutex_);
      message_ = message;
    };
  }
  std::string get() {
    std::lock_guard<std::mutex> lock(mutex_);
    return message_;
  }

 private:
  std::mutex mutex_;
  std::string message_;
};

}  // namespace

TEST(NcclCommunicator, SameRanksAsItsBootstrap) {
  auto nccl = make_nccl_communicator(world());
  EXPECT_EQ(nccl->rank(), world().rank());
  EXPECT_EQ(nccl->size(), world().size());
  EXPECT_EQ(nccl_unavailable_reason(), "");
}

TEST(NcclCommunicator, AllReduceSums) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size();
  for (int64_t n : kCounts) {
    auto buf = DeviceArray<float>::from_host(values(nccl->rank(), n));
    nccl->all_reduce(buf.data(), n);
    const std::vector<float> got = buf.download();
    EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return got[(size_t)i]; },
                             [&](int64_t i) { return sum_over_ranks(i, p); }),
              "");
  }
}

TEST(NcclCommunicator, AsyncAllReducesInFlightCompleteInOrder) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size();
  std::vector<DeviceArray<float>> bufs;
  std::vector<CommRequest> requests;
  for (int k = 0; k < 4; k++) bufs.push_back(DeviceArray<float>::from_host(values(nccl->rank(), 300, k)));
  for (int k = 0; k < 4; k++) requests.push_back(nccl->all_reduce_async(bufs[k].data(), 300));
  for (int k = 3; k >= 0; k--) {
    requests[k].wait();
    EXPECT_TRUE(requests[k].test());
    const std::vector<float> got = bufs[k].download();
    EXPECT_EQ(first_mismatch(0, 300, [&](int64_t i) { return got[(size_t)i]; },
                             [&](int64_t i) { return sum_over_ranks(k + i, p); }),
              "");
  }
}

// bf16 on the wire: each rank's buffer is rounded to bf16 (the values here are exact in
// bf16, as are their sums) and every rank ends with the same bits.
TEST(NcclCommunicator, AllReduceBf16RoundsAndSums) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size();
  const int64_t n = 1000;
  std::vector<float> host = values(nccl->rank(), n);
  host[0] = 1.0f + 1.0f / 1024;  // not a bf16: rounds to 1 before the sum
  auto buf = DeviceArray<float>::from_host(host);
  nccl->all_reduce_bf16(buf.data(), n);
  const std::vector<float> got = buf.download();
  EXPECT_EQ(got[0], (float)p);
  EXPECT_EQ(first_mismatch(1, n, [&](int64_t i) { return got[(size_t)i]; },
                             [&](int64_t i) { return sum_over_ranks(i, p); }),
              "");
  std::vector<float> all((size_t)(n * p));
  world().all_gather(got.data(), all.data(), n);
  for (int r = 0; r < p; r++)
    EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return all[(size_t)(r * n + i)]; },
                             [&](int64_t i) { return got[(size_t)i]; }),
              "");
}

TEST(NcclCommunicator, ReduceScatterOutOfPlaceAndInPlace) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size(), rank = nccl->rank();
  for (int64_t n : kCounts) {
    auto send = DeviceArray<float>::from_host(values(rank, n * p));
    DeviceArray<float> recv(n);
    nccl->reduce_scatter(send.data(), recv.data(), n);
    const std::vector<float> got = recv.download();
    EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return got[(size_t)i]; },
                             [&](int64_t i) { return sum_over_ranks(rank * n + i, p); }),
              "");
    // In place: recv is this rank's chunk of send.
    auto again = DeviceArray<float>::from_host(values(rank, n * p));
    nccl->reduce_scatter(again.data(), again.data() + rank * n, n);
    const std::vector<float> in_place = again.download();
    EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return in_place[(size_t)(rank * n + i)]; },
                             [&](int64_t i) { return sum_over_ranks(rank * n + i, p); }),
              "");
  }
}

TEST(NcclCommunicator, AllGatherOutOfPlaceAndInPlace) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size(), rank = nccl->rank();
  for (int64_t n : kCounts) {
    auto send = DeviceArray<float>::from_host(values(rank, n));
    DeviceArray<float> recv(n * p);
    nccl->all_gather(send.data(), recv.data(), n);
    std::vector<float> got = recv.download();
    for (int r = 0; r < p; r++)
      EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return got[(size_t)(r * n + i)]; },
                             [&](int64_t i) { return value(r, i); }),
              "");
    DeviceArray<float> in_place(n * p);
    kernels::cuda::check_cuda(cudaMemcpy(in_place.data() + rank * n, send.data(), sizeof(float) * n,
                                         cudaMemcpyDeviceToDevice), "cudaMemcpy");
    nccl->all_gather_async(in_place.data() + rank * n, in_place.data(), n).wait();
    got = in_place.download();
    for (int r = 0; r < p; r++)
      EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return got[(size_t)(r * n + i)]; },
                             [&](int64_t i) { return value(r, i); }),
              "");
  }
}

TEST(NcclCommunicator, BroadcastFromEveryRoot) {
  auto nccl = make_nccl_communicator(world());
  for (int root = 0; root < nccl->size(); root++) {
    auto buf = DeviceArray<float>::from_host(values(nccl->rank(), 513));
    nccl->broadcast(buf.data(), 513, root);
    const std::vector<float> got = buf.download();
    EXPECT_EQ(first_mismatch(0, 513, [&](int64_t i) { return got[(size_t)i]; },
                             [&](int64_t i) { return value(root, i); }),
              "");
  }
}

// Each rank sends to the next and receives from the previous, blocking, even ranks sending
// first and odd ranks receiving first (so that no two neighbours both wait to send).
TEST(NcclCommunicator, SendRecvRing) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size(), rank = nccl->rank();
  if (p == 1) GTEST_SKIP() << "needs two ranks";
  auto send = DeviceArray<float>::from_host(values(rank, 777));
  DeviceArray<float> recv(777);
  const int next = (rank + 1) % p, prev = (rank + p - 1) % p;
  if (rank % 2 == 0) {
    nccl->send(send.data(), 777, next);
    nccl->recv(recv.data(), 777, prev);
  } else {
    nccl->recv(recv.data(), 777, prev);
    nccl->send(send.data(), 777, next);
  }
  const std::vector<float> got = recv.download();
  EXPECT_EQ(first_mismatch(0, 777, [&](int64_t i) { return got[(size_t)i]; },
                             [&](int64_t i) { return value(prev, i); }),
              "");
}

// One group in which every rank sends to both neighbours first and then receives from
// both: posted one by one, such sends would wait for receives that nobody has posted yet
// (the NCCL emulator's sends, like NCCL's, complete only once matched); in one group they
// all progress. At one rank both neighbours are the rank itself.
TEST(NcclCommunicator, ExchangeSendsAndReceivesTogether) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size(), rank = nccl->rank();
  const int next = (rank + 1) % p, prev = (rank + p - 1) % p;
  const int64_t n = 1031;
  auto to_next = DeviceArray<float>::from_host(values(rank, n));
  auto to_prev = DeviceArray<float>::from_host(values(rank, n, 1000));
  DeviceArray<float> from_prev(n), from_next(n);
  nccl->exchange_async({{true, to_next.data(), n, next},
                        {true, to_prev.data(), n, prev},
                        {false, from_prev.data(), n, prev},
                        {false, from_next.data(), n, next}})
      .wait();
  const std::vector<float> got_prev = from_prev.download(), got_next = from_next.download();
  EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return got_prev[(size_t)i]; },
                           [&](int64_t i) { return value(prev, i); }),
            "");
  EXPECT_EQ(first_mismatch(0, n, [&](int64_t i) { return got_next[(size_t)i]; },
                           [&](int64_t i) { return value(next, 1000 + i); }),
            "");
}

// The agreements take host memory.
TEST(NcclCommunicator, HostAgreements) {
  auto nccl = make_nccl_communicator(world());
  const int p = nccl->size(), rank = nccl->rank();
  EXPECT_EQ(all_reduce_value(*nccl, 0.5 * (rank + 1), ReduceOp::sum), 0.25 * p * (p + 1));
  EXPECT_EQ(all_reduce_value(*nccl, (int64_t)((int64_t)rank * 1000000000000LL), ReduceOp::max),
            (int64_t)(p - 1) * 1000000000000LL);
  EXPECT_EQ(all_reduce_value(*nccl, (int32_t)(10 - rank), ReduceOp::min), 10 - (p - 1));
  EXPECT_EQ(all_reduce_value(*nccl, 1.5f * rank, ReduceOp::max), 1.5f * (p - 1));
  EXPECT_EQ(broadcast_string(*nccl, rank == p - 1 ? "from the last rank" : "", p - 1),
            "from the last rank");
  const std::vector<std::string> names = all_gather_strings(*nccl, "rank " + std::to_string(rank));
  EXPECT_EQ((int)names.size(), p);
  for (int r = 0; r < p && r < (int)names.size(); r++) EXPECT_EQ(names[r], "rank " + std::to_string(r));
  nccl->barrier();
}

// An operation that fails aborts the communicator: the error names the operation, and
// every later call says the communicator was aborted (no rank waits on a dead one).
// Every rank fails at the same operation, as all ranks of a job end on an NCCL error.
TEST(NcclCommunicator, FailureAbortsTheCommunicator) {
  NcclOptions options;
  options.fail_at_operation = 1;
  auto nccl = make_nccl_communicator(world(), options);
  auto buf = DeviceArray<float>::from_host(values(nccl->rank(), 10));
  nccl->all_reduce(buf.data(), 10);  // operation 0 works
  try {
    nccl->all_reduce(buf.data(), 10);
    FAIL() << "operation 1 should fail";
  } catch (const CommError& e) {
    EXPECT_EQ(std::string(e.what()),
              "communication failed in NcclCommunicator: ncclAllReduce (ncclSystemError: "
              "injected failure (NcclOptions.fail_at_operation = 1))");
  }
  expect_refused_after_abort([&] { nccl->barrier(); });
  world().barrier();
}

// An asynchronous NCCL error (a network failure: the calls succeed and NCCL reports the
// error later) is found by the communicator's watchdog thread, which aborts it; the next
// call says so. Every rank's error comes at the same operation, so none is left waiting.
TEST(NcclCommunicator, WatchdogFindsAnAsynchronousError) {
  NcclOptions options;
  options.async_error_at_operation = 1;
  auto nccl = make_nccl_communicator(world(), options);
  auto buf = DeviceArray<float>::from_host(values(nccl->rank(), 10));
  nccl->all_reduce(buf.data(), 10);
  // Runs; then NCCL is taken to report the error. The watchdog may find it before this
  // call has returned, which then throws it itself.
  std::string found;
  try {
    nccl->all_reduce(buf.data(), 10);
  } catch (const CommError& e) {
    found = e.what();
  }
  if (found.empty()) found = failure_within(*nccl, 20);
  EXPECT_NE(found.find("ncclAllReduce (ncclSystemError: injected asynchronous failure "
                       "(NcclOptions.async_error_at_operation = 1), found by the watchdog)"),
            std::string::npos)
      << "synchronize() threw \"" << found << "\" within 20 s";
  expect_refused_after_abort([&] { nccl->all_reduce(buf.data(), 10); });
  world().barrier();
}

// A host that does not notice a failure (no call into the communicator) for
// NcclOptions::stuck_after_seconds is taken for stuck: the watchdog calls on_stuck (the
// trainer's prints the error and ends the process).
TEST(NcclCommunicator, WatchdogCallsOnStuckWhenTheHostDoesNotNotice) {
  NcclOptions options;
  options.async_error_at_operation = 0;
  options.stuck_after_seconds = 0.2;
  StuckMessage stuck;
  stuck.install(options);
  auto nccl = make_nccl_communicator(world(), options);
  auto buf = DeviceArray<float>::from_host(values(nccl->rank(), 10));
  CommRequest unwaited = nccl->all_reduce_async(buf.data(), 10);  // no call notices after it
  std::string message;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (message.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    message = stuck.get();
  }
  EXPECT_NE(message.find("ncclAllReduce (ncclSystemError: injected asynchronous failure "),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("(the host did not come back to the communicator within 0.2 s: stuck "
                         "in NCCL or CUDA, or busy elsewhere; ended by the watchdog)"),
            std::string::npos)
      << "on_stuck got \"" << message << "\" within 20 s";
  expect_refused_after_abort([&] { nccl->all_reduce(buf.data(), 10); });
  world().barrier();
}

// A receive whose message never comes: the watchdog aborts the communicator after
// NcclOptions::timeout_seconds, which also ends NCCL's kernel, so the compute stream,
// made to wait for the receive, goes on. Both ranks time out; whichever aborts first may
// make the other's NCCL report the closed connection first, so either finding passes.
// A watchdog that does nothing would leave this test waiting: it ends the process
// instead, so that the check script does not wait for its time limit.
TEST(NcclCommunicator, WatchdogEndsAnOperationThatNeverFinishes) {
#ifdef TESSERA_CUDA_EMULATOR
  GTEST_SKIP() << "the NCCL emulator's operations complete at the call: none can hang";
#else
  const int p = world().size(), rank = world().rank();
  if (p < 2) GTEST_SKIP() << "needs two ranks";
  NcclOptions options;
  // Also the limit on the initialisation and the first exchange (the host inside NCCL's
  // call), which take a second or more with several processes on one GPU.
  options.timeout_seconds = 10;
  auto nccl = make_nccl_communicator(world(), options);
  auto buf = DeviceArray<float>::from_host(values(rank, 10));
  DeviceArray<float> got(10);
  const int next = (rank + 1) % p, prev = (rank + p - 1) % p;
  // A ring exchange first, so the connections to the neighbours exist and the receive
  // below is only queued, not held in NCCL's connection setup.
  nccl->exchange_async({{true, buf.data(), 10, next, 0}, {false, got.data(), 10, prev, 0}}).wait();
  nccl->synchronize();
  CommRequest never = nccl->recv_async(got.data(), 10, prev);  // nobody sends it
  never.wait();  // the compute stream waits for it
  std::string found;
  const auto start = std::chrono::steady_clock::now();
  while (found.empty() && std::chrono::steady_clock::now() - start < std::chrono::seconds(30)) {
    try {
      if (never.test()) break;
    } catch (const CommError& e) {
      found = e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (found.empty()) {
    std::fprintf(stderr, "WatchdogEndsAnOperationThatNeverFinishes: no failure within 30 s\n");
    std::_Exit(1);
  }
  EXPECT_NE(found.find("ncclRecv ("), std::string::npos) << found;
  EXPECT_NE(found.find("found by the watchdog"), std::string::npos) << found;
  // The compute stream is no longer held by the aborted receive.
  cudaError_t stream = cudaErrorNotReady;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(40) &&
         (stream = cudaStreamQuery(nullptr)) == cudaErrorNotReady)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (stream == cudaErrorNotReady) {
    std::fprintf(stderr, "WatchdogEndsAnOperationThatNeverFinishes: the compute stream is "
                         "still held 40 s after the receive was aborted\n");
    std::_Exit(1);
  }
  world().barrier();
#endif
}

// A host held inside an NCCL call (here the initialisation, which waits for every rank; an
// operation's first use of a connection waits likewise) past NcclOptions::timeout_seconds
// is a failure the watchdog records; it cannot abort under the host's call, so on_stuck
// (the trainer's ends the process) follows stuck_after_seconds later.
TEST(NcclCommunicator, WatchdogSeesAHostHeldInsideAnNcclCall) {
  const int p = world().size(), rank = world().rank();
  if (p < 2) GTEST_SKIP() << "needs two ranks";
  NcclUniqueId id;
  if (rank == 0) id = nccl_unique_id();
  world().broadcast_bytes(id.bytes, sizeof id.bytes, 0);
  NcclOptions options;
  StuckMessage stuck;
  if (rank == 0) {
    options.timeout_seconds = 0.3;
    options.stuck_after_seconds = 0.2;
    stuck.install(options);
  } else {
    options.fail_at_operation = 0;  // its first call fails, aborting: nothing waits for rank 0
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  }
  auto nccl = make_nccl_communicator(id, p, rank, options);
  auto buf = DeviceArray<float>::from_host(values(rank, 10));
  if (rank == 0) {
    const std::string message = stuck.get();
    EXPECT_NE(message.find("ncclCommInitRankConfig (the host has been inside this call for "
                           "more than 0.3 s: a peer rank is missing or stuck; found by the "
                           "watchdog)"),
              std::string::npos)
        << "on_stuck got \"" << message << "\" while rank 0 waited 1.5 s in the initialisation";
    // Only once the failure is known: on a healthy communicator the call would wait for
    // the other ranks, whose communicators have failed.
    if (!message.empty()) expect_refused_after_abort([&] { nccl->all_reduce(buf.data(), 10); });
  } else {
    EXPECT_THROW(nccl->all_reduce(buf.data(), 10), CommError);
  }
  world().barrier();
}

// Communicators made from one id per group, as the mesh makes one per axis: two halves
// of the world reduce independently.
TEST(NcclCommunicator, GroupsFromTheirOwnIds) {
  const int p = world().size(), rank = world().rank();
  if (p < 2 || p % 2) GTEST_SKIP() << "needs an even number of ranks";
  // Ranks 0 and 1 lead the even and the odd half; every rank learns both ids.
  NcclUniqueId mine;
  if (rank < 2) mine = nccl_unique_id();
  std::vector<NcclUniqueId> ids((size_t)p);
  world().all_gather_bytes(&mine, ids.data(), sizeof mine);
  auto nccl = make_nccl_communicator(ids[(size_t)(rank % 2)], p / 2, rank / 2);
  EXPECT_EQ(nccl->size(), p / 2);
  auto buf = DeviceArray<float>::from_host(values(rank, 50));
  nccl->all_reduce(buf.data(), 50);
  const std::vector<float> got = buf.download();
  auto half_sum = [&](int64_t i) {
    float s = 0;
    for (int r = rank % 2; r < p; r += 2) s += value(r, i);
    return s;
  };
  EXPECT_EQ(first_mismatch(0, 50, [&](int64_t i) { return got[(size_t)i]; }, half_sum), "");
}
