#include "framework/train/zero.h"

#include <cmath>

#include "parallel/collectives.h"

namespace tessera {

double zero_grad_norm(GPTModel& model, FlatRange shard, Communicator& dp_comm) {
  const SquareSums s = range_sum_squares(model.table(), model.grads(), shard, model.backend());
  double sums[2] = {s.sharded, s.replicated};
  dp_comm.all_reduce(sums, 2, ScalarType::f64, ReduceOp::sum);
  if (model.tp().size > 1) sums[0] = all_reduce_value(*model.tp().comm, sums[0], ReduceOp::sum);
  double total = sums[0] + sums[1];  // then every pipeline stage's (tied copies left out)
  if (model.stage().size > 1) total = all_reduce_value(*model.stage().comm, total, ReduceOp::sum);
  return std::sqrt(total);
}

}  // namespace tessera
