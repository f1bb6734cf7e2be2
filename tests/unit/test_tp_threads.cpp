// Tensor parallelism without mpirun: the ranks of the tp group are threads of this test,
// talking through ThreadCommunicator, and the sharded model must match the
// single-process model to a relative 1e-6 (tests/unit/tp_model_check.h), at tp = 2 and 4.
// Also the communicator itself: every collective against sums computed here.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "parallel/collectives.h"
#include "parallel/thread_communicator.h"
#include "tests/unit/tp_model_check.h"

namespace tessera {
namespace {

// Runs fn(comm) on `size` threads of one group; a failing rank breaks the group.
void on_thread_group(int size, const std::function<void(Communicator&)>& fn) {
  auto comms = make_thread_communicators(size, std::chrono::seconds(60));
  run_on_threads(size, [&](int r) { fn(*comms[r]); }, [&] { comms[0]->break_group(); });
}

TEST(ThreadCommunicator, CollectivesMatchSumsComputedHere) {
  for (int p : {1, 2, 3, 4}) {
    on_thread_group(p, [p](Communicator& c) {
      const int r = c.rank(), n = 7;
      std::vector<float> x(n);
      for (int i = 0; i < n; i++) x[i] = float(r * 10 + i);
      c.all_reduce(x.data(), n);
      for (int i = 0; i < n; i++) EXPECT_EQ(x[i], float(10 * p * (p - 1) / 2 + p * i));

      std::vector<float> send(p * 3), recv(3);
      for (int i = 0; i < p * 3; i++) send[i] = float(r + i);
      c.reduce_scatter(send.data(), recv.data(), 3);
      for (int i = 0; i < 3; i++) EXPECT_EQ(recv[i], float(p * (p - 1) / 2 + p * (r * 3 + i)));

      std::vector<float> mine(2, float(r)), all(2 * p);
      c.all_gather(mine.data(), all.data(), 2);
      for (int i = 0; i < 2 * p; i++) EXPECT_EQ(all[i], float(i / 2));

      EXPECT_EQ(all_reduce_value<int64_t>(c, r, ReduceOp::max), p - 1);
      EXPECT_EQ(all_reduce_value<double>(c, r + 0.5, ReduceOp::min), 0.5);
      EXPECT_EQ(broadcast_string(c, r == p - 1 ? "from the last" : "", p - 1), "from the last");
      const auto names = all_gather_strings(c, std::string(r, 'x'));
      for (int q = 0; q < p; q++) EXPECT_EQ(names[q], std::string(q, 'x'));
      EXPECT_EQ(first_error_of_all(c, r >= 1 ? "rank " + std::to_string(r) : ""),
                p > 1 ? "rank 1" : "");

      if (p > 1) {  // a ring of messages, received out of order of their tags
        const int right = (r + 1) % p, left = (r + p - 1) % p;
        float a = float(r), b = float(r + 100), got_a = -1, got_b = -1;
        c.send(&a, 1, right, 1);
        c.send(&b, 1, right, 2);
        CommRequest rb = c.recv_async(&got_b, 1, left, 2);
        c.recv(&got_a, 1, left, 1);
        rb.wait();
        EXPECT_EQ(got_a, float(left));
        EXPECT_EQ(got_b, float(left + 100));
      }
    });
  }
}

TEST(ThreadCommunicator, AFailingRankEndsThePeersWaitInsteadOfHanging) {
  auto comms = make_thread_communicators(2, std::chrono::seconds(60));
  EXPECT_THROW(run_on_threads(
                   2,
                   [&](int r) {
                     if (r == 1) throw Error("rank 1 fails before the collective");
                     float x = 1;
                     comms[r]->all_reduce(&x, 1);
                   },
                   [&] { comms[0]->break_group(); }),
               Error);
}

TEST(TensorParallelThreads, MatchesSingleProcess) {
  for (int tp : {2, 4})
    on_thread_group(tp, [](Communicator& c) { check_tp_model(c, 256, 256, 1e-6); });
}

TEST(TensorParallelThreads, LlamaMatchesSingleProcess) {
  GPTConfig llama;
  llama.family = Family::llama;
  llama.intermediate_size = 48;
  llama.n_kv_head = 2;  // one key/value head per rank at tp 2, for two query heads
  on_thread_group(2, [&](Communicator& c) { check_tp_model(c, 255, 256, 1e-6, llama); });
  llama.n_kv_head = 4;  // multi-head attention, one head of each per rank at tp 4
  llama.tie_embeddings = true;
  on_thread_group(4, [&](Communicator& c) { check_tp_model(c, 250, 253, 1e-6, llama); });
}

TEST(TensorParallelThreads, VocabularyNotDivisibleByTp) {
  on_thread_group(2, [](Communicator& c) { check_tp_model(c, 255, 255, 1e-6); });
  on_thread_group(4, [](Communicator& c) { check_tp_model(c, 250, 253, 1e-6); });
}

}  // namespace
}  // namespace tessera
