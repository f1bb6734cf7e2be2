// bench_allreduce: gradient synchronisation and all-reduce bus bandwidth, side by side.
//   OMP_NUM_THREADS=1 mpirun -n 2 bench_allreduce [--quick]
// (a) Syncing a GPT-2 124M gradient buffer (124,475,904 floats: GPT-2 small with the
//     vocabulary padded to 50304, laid out in forward order, reduced in backward order)
//     with GradBuckets (1, 4, 25, 100 MiB) against ONE MPI_Allreduce over the whole buffer.
//     Median of 5 (after one warm-up), time = slowest rank. Sums (average=false), as the
//     plain MPI_Allreduce does.
// (b) Bus bandwidth 2(p-1)/p * bytes / time of Tessera's all_reduce (dispatch: MPI_Allreduce
//     below the ring threshold, chunked ring above), the forced ring, and MPI_Allreduce,
//     at 4 KiB .. 256 MiB; then Tessera on the 124M buffer as % of the best MPI_Allreduce
//     bandwidth at any size.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "parallel/grad_buckets.h"
#include "parallel/mpi_communicator.h"

using namespace tessera;

namespace {

int g_rank = 0, g_size = 1;

double time_op(const std::function<void()>& op, int reps) {
  std::vector<double> ts;
  op();  // warm-up
  for (int i = 0; i < reps; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    op();
    double dt = MPI_Wtime() - t0, mx = 0;
    MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    ts.push_back(mx);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

std::vector<ParamSpan> gpt2_124m_backward_order() {
  const int64_t C = 768, V = 50304, T = 1024, L = 12;
  std::vector<int64_t> sizes = {V * C, T * C};
  for (int l = 0; l < L; ++l) {
    for (int64_t s : {C, C, C * 3 * C, 3 * C, C * C, C, C, C, C * 4 * C, 4 * C, 4 * C * C, C})
      sizes.push_back(s);
  }
  sizes.push_back(C);
  sizes.push_back(C);
  std::vector<ParamSpan> p;
  int64_t off = 0;
  for (auto s : sizes) { p.push_back({off, s}); off += s; }
  std::reverse(p.begin(), p.end());
  return p;
}

void mpi_allreduce(float* buf, int64_t n) {
  const int64_t kMax = int64_t{1} << 30;
  for (int64_t off = 0; off < n; off += kMax)
    MPI_Allreduce(MPI_IN_PLACE, buf + off, static_cast<int>(std::min(kMax, n - off)), MPI_FLOAT,
                  MPI_SUM, MPI_COMM_WORLD);
}

}  // namespace

int main(int argc, char** argv) {
  int provided;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const double busf = 2.0 * (g_size - 1) / g_size;
  {
    MpiCommunicatorOptions opts;
    if (const char* e = std::getenv("TESSERA_RING_CHUNK_BYTES")) opts.chunk_bytes = std::atoll(e);
    MpiCommunicator comm(MPI_COMM_WORLD, opts);
    if (g_rank == 0)
      std::printf("bench_allreduce: %d ranks, MPI thread level %d (MULTIPLE=%d), async via %s, "
                  "ring threshold %lld B, ring message %lld B\n",
                  g_size, provided, MPI_THREAD_MULTIPLE,
                  comm.async_uses_thread() ? "helper thread" : "MPI_Iallreduce",
                  (long long)comm.options().ring_threshold_bytes,
                  (long long)comm.options().chunk_bytes);

    // ---------------------------------------------------------------- (b) bandwidth sweep
    double best_mpi = 0;
    int64_t best_mpi_bytes = 0;
    {
      const int64_t max_bytes = quick ? (16 << 20) : (256 << 20);
      std::vector<float> buf(max_bytes / 4, 1e-3f);
      if (g_rank == 0)
        std::printf("\n(b) all-reduce bus bandwidth, GB/s (median)\n%10s %12s %12s %12s\n", "bytes",
                    "MPI_Allreduce", "Tessera", "ring forced");
      for (int64_t bytes = 4 << 10; bytes <= max_bytes; bytes *= 4) {
        const int64_t n = bytes / 4;
        const int reps = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 30) / bytes, 5, 50));
        std::fill(buf.begin(), buf.begin() + n, 1e-3f);
        double tm = time_op([&] { mpi_allreduce(buf.data(), n); }, reps);
        std::fill(buf.begin(), buf.begin() + n, 1e-3f);
        double tt = time_op([&] { comm.all_reduce(buf.data(), n); }, reps);
        std::fill(buf.begin(), buf.begin() + n, 1e-3f);
        double tr = time_op([&] { comm.ring_all_reduce(buf.data(), n); }, reps);
        double bm = busf * bytes / tm / 1e9, bt = busf * bytes / tt / 1e9, br = busf * bytes / tr / 1e9;
        if (bytes >= (64 << 10) && bm > best_mpi) { best_mpi = bm; best_mpi_bytes = bytes; }
        if (g_rank == 0) std::printf("%10lld %12.2f %12.2f %12.2f\n", (long long)bytes, bm, bt, br);
      }
    }

    // ---------------------------------------------------------------- (a) 124M gradient sync
    auto params = gpt2_124m_backward_order();
    int64_t total = 0;
    for (auto& p : params) total += p.numel;
    if (quick) {  // keep the layer list, scale nothing: just check the count
      if (g_rank == 0) std::printf("\n(--quick: skipping the 124M buffer)\n");
    } else {
      std::vector<float> g(total, 1e-3f);
      const int reps = 5;
      const double bytes = 4.0 * total;
      if (g_rank == 0)
        std::printf("\n(a) sync of a GPT-2 124M gradient buffer: %lld floats (%.1f MB), median of %d\n"
                    "%-34s %10s %10s %10s\n", (long long)total, bytes / 1e6, reps, "method", "time s",
                    "busGB/s", "speedup");
      double t_one = time_op([&] { mpi_allreduce(g.data(), total); }, reps);
      auto row = [&](const char* name, double t) {
        if (g_rank == 0)
          std::printf("%-34s %10.4f %10.2f %9.2fx\n", name, t, busf * bytes / t / 1e9, t_one / t);
      };
      row("one MPI_Allreduce (whole buffer)", t_one);
      double t_b25 = 0;
      for (double mb : {1.0, 4.0, 25.0, 100.0}) {
        GradBuckets gb(comm, g.data(), params, mb, /*average=*/false);
        double t = time_op([&] {
          for (int i = 0; i < static_cast<int>(params.size()); ++i) gb.mark_ready(i);
          gb.finish();
        }, reps);
        char name[64];
        std::snprintf(name, sizeof name, "Tessera buckets %g MiB (%zu)%s", mb, gb.buckets().size(),
                      mb == 25.0 ? " *" : "");
        row(name, t);
        if (mb == 25.0) t_b25 = t;
      }
      double t_ar = time_op([&] { comm.all_reduce(g.data(), total); }, reps);
      row("Tessera all_reduce (whole buffer)", t_ar);
      if (g_rank == 0) {
        const double bw25 = busf * bytes / t_b25 / 1e9, bwar = busf * bytes / t_ar / 1e9;
        std::printf("\nspeedup, 25 MiB buckets vs one MPI_Allreduce: %.2fx (target >= 1.5x)\n",
                    t_one / t_b25);
        std::printf("best MPI_Allreduce bus bandwidth (64 KiB..256 MiB): %.2f GB/s at %lld B\n",
                    best_mpi, (long long)best_mpi_bytes);
        std::printf("Tessera on the 124M buffer: buckets 25 MiB %.2f GB/s = %.0f%%, "
                    "all_reduce %.2f GB/s = %.0f%% of best MPI_Allreduce (target >= 90%%)\n",
                    bw25, 100 * bw25 / best_mpi, bwar, 100 * bwar / best_mpi);
      }
    }
  }
  MPI_Finalize();
  return 0;
}
