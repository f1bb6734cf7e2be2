// Values, strings and errors over a Communicator: the small agreements that keep ranks in
// step (a mean loss, a norm, a stop signal, a run id, the first error of any rank). Each
// is collective over `comm`: every rank calls it, in the same order.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "parallel/communicator.h"

namespace tessera {

template <class T>
constexpr ScalarType scalar_type_of() {
  if constexpr (std::is_same_v<T, float>) return ScalarType::f32;
  else if constexpr (std::is_same_v<T, double>) return ScalarType::f64;
  else if constexpr (std::is_same_v<T, int32_t>) return ScalarType::i32;
  else {
    static_assert(std::is_same_v<T, int64_t>, "all_reduce_value: float, double, int32_t or int64_t");
    return ScalarType::i64;
  }
}

// x reduced over the ranks of comm (sum, max or min), on every rank.
template <class T>
T all_reduce_value(Communicator& comm, T x, ReduceOp op) {
  if (comm.size() > 1) comm.all_reduce(&x, 1, scalar_type_of<T>(), op);
  return x;
}

// The mean of x over the ranks of comm.
double all_reduce_mean(Communicator& comm, double x);

// root's s on every rank.
std::string broadcast_string(Communicator& comm, const std::string& s, int root);

// Every rank's s, in rank order, on every rank.
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& s);

// "" when every rank's `error` is empty, else the error of the lowest failing rank, on
// every rank. Also a barrier. Lets every rank throw the same message instead of some
// waiting in a collective for a rank that failed.
std::string first_error_of_all(Communicator& comm, const std::string& error);

// A communicator of one rank (every collective is the identity), for code that is
// collective over a group when it runs alone: tools, tests, a one-process run.
Communicator& single_process_communicator();

}  // namespace tessera
