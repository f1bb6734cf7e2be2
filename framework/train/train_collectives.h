// Every collective the training loop itself calls (the model, pipeline, buckets and
// checkpoints have their own), kept in one place: small named operations over the world
// or over one of the mesh's groups.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <string>

namespace tessera::train_collectives {

struct World {
  int rank = 0, size = 1;
};
World world();

// `s` as rank `root` of the world holds it, on every rank.
std::string broadcast_string(std::string s, int root);
// Sum / maximum of x over the world.
double sum_over_world(double x);
double max_over_world(double x);
// Whether `ok` holds on every rank of the world.
bool all_over_world(bool ok);
// The largest `signo` of any rank of the world (0: none has one).
int agreed_signal(int signo);
// Element-wise sums over `comm`, in place.
void sum_in(double* x, int n, MPI_Comm comm);
void sum_in(int64_t* x, int n, MPI_Comm comm);
// Mean of x over the ranks of `comm`.
double mean_in(double x, MPI_Comm comm);

}  // namespace tessera::train_collectives
