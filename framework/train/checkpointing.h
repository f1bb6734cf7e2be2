// The training state in checkpoints: what this rank writes (the pieces it owns) and
// what it reads to resume (the boxes it needs), for any parallel layout.
//
// Written once per model replica: parameters and AdamW moments by data-parallel rank 0
// (under ZeRO-1 each dp rank writes the moments of its own range), tensor-parallel
// slices by their tp rank, replicated tensors by tp rank 0, each pipeline stage its own
// layers (the last stage's tied copy of wte is not written). Every piece is a box of a
// logical tensor (framework/model/params.h, logical_boxes), so a checkpoint does not
// depend on the layout that wrote it, and any layout reads back exactly its own slices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "framework/model/gpt2.h"
#include "framework/optim/adamw.h"
#include "framework/recipe/recipe.h"

namespace tessera {

// This rank's pieces: parameters and moments ("<name>.adam_m", "<name>.adam_v").
std::vector<TensorPiece> training_state_pieces(GPT2& model, AdamW& adamw, int dp_rank);

// Where this rank's parameters (not the moments) come from in a checkpoint: every local
// slice, a tied copy from the tensor it copies. For inference (tessera generate).
std::vector<TensorDest> parameter_dests(GPT2& model);

// Where this rank's parameters and moments come from in a checkpoint: every local slice
// (a tied copy from the tensor it copies), the moments of its range under ZeRO-1.
std::vector<TensorDest> training_state_dests(GPT2& model, AdamW& adamw);

// The checkpoint that checkpoint.resume names, or "" to start fresh: `none` gives "";
// `auto` the newest complete checkpoint in checkpoint.dir if it has one, else ""; a path
// that checkpoint (a step directory, or a directory with `latest`), which must exist.
// Throws tessera::Error naming the key for a path that is not a checkpoint.
std::string resume_source(const Recipe& recipe);

// Resumes from `path`: every rank verifies its share of the shard files' checksums, then
// reads the boxes of its own parameters and moments (training_state_dests), whatever
// layout wrote them. Collective over MPI_COMM_WORLD: a fault on any rank throws the same
// tessera::Error on every rank. Returns the checkpoint's metadata (step, data position).
CheckpointMeta resume_training_state(const std::string& path, GPT2& model, AdamW& adamw);

}  // namespace tessera
