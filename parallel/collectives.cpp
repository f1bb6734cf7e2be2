#include "parallel/collectives.h"

#include <algorithm>
#include <climits>

#include "parallel/thread_communicator.h"

namespace tessera {

double all_reduce_mean(Communicator& comm, double x) {
  return all_reduce_value(comm, x, ReduceOp::sum) / comm.size();
}

std::string broadcast_string(Communicator& comm, const std::string& s, int root) {
  if (comm.size() == 1) return s;
  int64_t n = (int64_t)s.size();
  comm.broadcast_bytes(&n, sizeof n, root);
  std::string out = comm.rank() == root ? s : std::string((size_t)n, '\0');
  comm.broadcast_bytes(out.data(), n, root);
  return out;
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& s) {
  if (comm.size() == 1) return {s};
  const int p = comm.size();
  const int64_t mine = (int64_t)s.size();
  std::vector<int64_t> sizes(p);
  comm.all_gather_bytes(&mine, sizes.data(), sizeof mine);
  int64_t widest = 0;
  for (int64_t n : sizes) widest = std::max(widest, n);
  std::string padded = s;  // every rank sends the widest length (all_gather takes one size)
  padded.resize((size_t)widest);
  std::string all((size_t)(widest * p), '\0');
  comm.all_gather_bytes(padded.data(), all.data(), widest);
  std::vector<std::string> out(p);
  for (int r = 0; r < p; r++) out[r] = all.substr((size_t)(r * widest), (size_t)sizes[r]);
  return out;
}

std::string first_error_of_all(Communicator& comm, const std::string& error) {
  if (comm.size() == 1) return error;
  const int32_t first =
      all_reduce_value<int32_t>(comm, error.empty() ? INT32_MAX : comm.rank(), ReduceOp::min);
  if (first == INT32_MAX) return "";
  return broadcast_string(comm, error, first);
}

Communicator& single_process_communicator() {
  static const auto alone = make_thread_communicators(1);
  return *alone[0];
}

}  // namespace tessera
