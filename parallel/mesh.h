// The process mesh: world = dp x tp x pp MPI ranks, one communicator per group.
//
// Rank order is Megatron's: tensor-parallel fastest, then data-parallel, then pipeline:
//
//   world_rank = pp_rank * (dp * tp) + dp_rank * tp + tp_rank
//
// so the ranks of a tensor-parallel group (which talk most) are neighbours, normally on
// one node, and a pipeline stage is a contiguous block of dp * tp ranks.
//
// A layout is checked before any communicator is split. Every rank evaluates the same
// inputs (the recipe, the world size and whether the job runs under Slurm), so every
// rank throws the same tessera::ConfigError with the same message, and no rank waits in a
// collective the others never reach; the command line prints it once.
// validate_layout() is the same check without MPI, for tests and for tools that want
// to check a recipe before submitting a job.
#pragma once
#include <mpi.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tessera {

class Communicator;
class MpiCommunicator;

// What the layout is checked against: the parallel degrees, the job's size and the
// model facts that decide whether the work can be split that way.
struct LayoutSpec {
  int dp = 1, tp = 1, pp = 1;  // recipe parallel.dp / tp / pp
  int n_head = 1;              // model.n_head: attention heads are split across tp
  int n_embd = 1;              // model.n_embd: split across tp; the MLP width is 4 * n_embd
  int n_layer = 1;             // model.n_layer: split across pp stages
  int global_batch = 1;        // train.global_batch: split over dp ranks in micro-batches
  int micro_batch = 1;         // train.micro_batch
  int n_kv_head = 0;           // llama's key/value heads, split across tp (0: none to check)
  int mlp_width = 0;           // the MLP's hidden width, split across tp (0: 4 * n_embd)
};

// The first problem with running `spec` on `world_size` ranks, as one line, or nullopt
// when the layout is possible. Pure: no MPI. The checks, in order: degrees >= 1; world
// size == dp*tp*pp; n_head % tp; n_kv_head % tp; mlp width % tp; n_embd % tp; n_layer >= pp;
// global_batch % (dp*micro_batch). A wrong world size suggests how to start the job:
// `mpirun -n N`, or under Slurm (`under_slurm`) `srun -n N` / `sbatch --ntasks=N`.
std::optional<std::string> layout_problem(const LayoutSpec& spec, int world_size,
                                          bool under_slurm = false);

// Whether this process runs in a Slurm job (SLURM_JOB_ID is set).
bool running_under_slurm();

// Throws tessera::ConfigError(layout_problem(..., running_under_slurm())) if there is a
// problem.
void validate_layout(const LayoutSpec& spec, int world_size);

// A rank's place in the mesh.
struct MeshCoords {
  int dp = 0, tp = 0, pp = 0;
  bool operator==(const MeshCoords&) const = default;
};

// Rank order (pure functions of the degrees).
int mesh_world_rank(const MeshCoords& c, int dp, int tp, int pp);
MeshCoords mesh_coords(int world_rank, int dp, int tp, int pp);

enum class MeshAxis { dp, tp, pp };
// World ranks of the group along `axis` that contains `world_rank`, ordered by their
// rank within that group (which is also the order of MPI_Comm_rank in the group's comm).
std::vector<int> mesh_group_ranks(int world_rank, MeshAxis axis, int dp, int tp, int pp);

// This process's place on its node, from the launcher's environment:
// Open MPI (OMPI_COMM_WORLD_LOCAL_RANK / OMPI_COMM_WORLD_LOCAL_SIZE), then Slurm
// (SLURM_LOCALID; size from SLURM_NTASKS_PER_NODE, else this node's entry of
// SLURM_TASKS_PER_NODE such as "4(x2),3" indexed by SLURM_NODEID), else rank 0 of 1.
struct LocalRank {
  int rank = 0;
  int size = 1;
  std::string source = "default";  // "openmpi", "slurm" or "default"
};
using EnvLookup = std::function<const char*(const char*)>;
LocalRank discover_local_rank(const EnvLookup& env);  // testable with a fake environment
LocalRank discover_local_rank();                      // from the real environment

// The mesh of this job. Construction is collective over `world` (every rank must call
// it, with the same spec): it validates, then splits `world` into the three groups.
// Owns its communicators and frees them on destruction (unless MPI is finalized).
class Mesh {
 public:
  Mesh(MPI_Comm world, const LayoutSpec& spec);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;
  Mesh(Mesh&& other) noexcept;
  Mesh& operator=(Mesh&& other) noexcept;

  MPI_Comm world_comm() const { return world_; }
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  const LayoutSpec& spec() const { return spec_; }
  const MeshCoords& coords() const { return coords_; }

  int dp_rank() const { return coords_.dp; }
  int tp_rank() const { return coords_.tp; }
  int pp_rank() const { return coords_.pp; }
  int dp_size() const { return spec_.dp; }
  int tp_size() const { return spec_.tp; }
  int pp_size() const { return spec_.pp; }

  // Group communicators: tp = same (dp, pp); dp = same (tp, pp); pp = same (dp, tp).
  // A rank's rank in each equals its coordinate on that axis.
  MPI_Comm tp_comm() const { return tp_; }
  MPI_Comm dp_comm() const { return dp_; }
  MPI_Comm pp_comm() const { return pp_; }
  MPI_Comm comm(MeshAxis axis) const;

  // The same groups as Communicators: every message of the training code goes through
  // these (world: the whole job, for agreements such as a stop signal or an error).
  Communicator& world() const;
  Communicator& group(MeshAxis axis) const;
  Communicator& tp() const { return group(MeshAxis::tp); }
  Communicator& dp() const { return group(MeshAxis::dp); }
  Communicator& pp() const { return group(MeshAxis::pp); }

  // Replaces the dp, tp and pp groups' communicators by make(the group's MPI one), e.g.
  // NCCL communicators of the same ranks for training on GPUs (parallel/nccl_communicator.h);
  // world() stays MPI. Collective over the world: every rank calls it once, after
  // construction. The MPI groups remain for make's bootstrap and are freed last.
  using GroupFactory = std::function<std::unique_ptr<Communicator>(Communicator& mpi_group)>;
  void use_group_communicators(const GroupFactory& make);
  // synchronize() of the dp, tp and pp groups: returns once their operations have
  // finished; throws the first failure (an NCCL group's watchdog may have found one).
  void synchronize_groups();

  // Pipeline neighbours as world ranks (same dp and tp coordinates), or -1 at the ends.
  bool is_first_stage() const { return coords_.pp == 0; }
  bool is_last_stage() const { return coords_.pp == spec_.pp - 1; }
  int prev_stage_world_rank() const;
  int next_stage_world_rank() const;

  const LocalRank& local() const { return local_; }
  int local_rank() const { return local_.rank; }
  int local_size() const { return local_.size; }

  // "dp=2 x tp=2 x pp=2 (rank 5: dp 0, tp 1, pp 1)" for logs.
  std::string describe() const;

 private:
  void free_comms() noexcept;

  MPI_Comm world_ = MPI_COMM_NULL;
  MPI_Comm tp_ = MPI_COMM_NULL, dp_ = MPI_COMM_NULL, pp_ = MPI_COMM_NULL;
  // Over world_, tp_, dp_, pp_ (duplicates of them), freed before those.
  std::unique_ptr<MpiCommunicator> world_comm_, tp_comm_, dp_comm_, pp_comm_;
  // use_group_communicators' replacements (null: the MPI ones serve), freed first.
  std::unique_ptr<Communicator> tp_group_, dp_group_, pp_group_;
  LayoutSpec spec_;
  MeshCoords coords_;
  int world_rank_ = 0, world_size_ = 1;
  LocalRank local_;
};

}  // namespace tessera
