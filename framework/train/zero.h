// ZeRO-1's global gradient norm, apart from the trainer so that the GPU layout check
// (tests/gpu_training/gpu_layout_check.cpp), which runs without MPI, takes the same one.
#pragma once

#include "framework/model/gpt_model.h"
#include "framework/optim/adamw.h"
#include "parallel/communicator.h"

namespace tessera {

// The global gradient norm under ZeRO-1, where this rank holds the dp-summed gradient of
// `shard` only: the shards' square sums are added over dp (the shards partition the flat
// buffer), then — as GPTModel::grad_norm() does — the tp-sharded parameters' sums over tp,
// while the replicated ones (the same on every tp rank) count once.
double zero_grad_norm(GPTModel& model, FlatRange shard, Communicator& dp_comm);

}  // namespace tessera
