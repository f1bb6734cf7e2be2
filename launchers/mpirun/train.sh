#!/usr/bin/env bash
# Train a recipe on this machine with NPROCS MPI ranks.
#
#   launchers/mpirun/train.sh NPROCS RECIPE [--set key=value ...]
#   launchers/mpirun/train.sh 4 recipes/tiny.yaml --set parallel.dp=2 --set parallel.tp=2
#
# NPROCS must equal parallel.dp * tp * pp of the recipe (after --set); Tessera checks it at
# start-up on every rank and exits with a message otherwise. The binary is $TESSERA, else
# build/bin/tessera of this checkout. Extra mpirun options go in $MPIRUN_ARGS.
#
# On GPUs (train.device=cuda, in the recipe or as --set train.device=cuda): one rank per
# GPU. Each rank uses GPU local_rank % (GPUs it sees), local_rank being Open MPI's
# OMPI_COMM_WORLD_LOCAL_RANK, so NPROCS ranks on one machine take GPUs 0..NPROCS-1 of
# CUDA_VISIBLE_DEVICES (all GPUs when unset); the script leaves that variable as it is, so
# every rank sees all of them and NCCL can reach them directly (NVLink). The script says
# what it found and warns when ranks outnumber the GPUs here. On the CPU nothing changes.
#
#   launchers/mpirun/train.sh 8 recipes/gpt2-124m.yaml --set train.device=cuda \
#       --set train.precision=bf16 --set parallel.dp=8
#
# 2 nodes x 8 GPUs = 16 ranks from a host file (`node1 slots=8`, `node2 slots=8`): mpirun
# fills node1's slots first, so ranks 0-7 are on node1 and each tp group of at most 8
# consecutive ranks stays inside a node, as in Megatron (tp must divide model.n_head,
# 12 for gpt2-124m):
#
#   MPIRUN_ARGS="--hostfile hosts" OMP_NUM_THREADS_OVERRIDE=8 launchers/mpirun/train.sh 16 \
#       recipes/gpt2-124m.yaml --set train.device=cuda --set train.precision=bf16 \
#       --set parallel.dp=4 --set parallel.tp=4
#
# The binary and the data must be at the same paths on every node; on GPUs the script
# passes NCCL_* variables set here on to every rank (mpirun -x).
# On GPUs every layout (dp, tp, pp) communicates over NCCL (docs/cuda.md).
set -euo pipefail

usage() { echo "usage: $0 NPROCS RECIPE [--set key=value ...]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
NPROCS=$1; RECIPE=$2; shift 2
[[ $NPROCS =~ ^[1-9][0-9]*$ ]] || { echo "$0: NPROCS must be a positive integer, got '$NPROCS'" >&2; exit 2; }
[[ -f $RECIPE ]] || { echo "$0: recipe '$RECIPE' not found" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TESSERA=${TESSERA:-$ROOT/build/bin/tessera}
[[ -x $TESSERA ]] || { echo "$0: no tessera binary at $TESSERA (run make build, or set TESSERA)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "$0: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }

# Open MPI refuses to run as root without these, and more ranks than cores need
# oversubscription (harmless otherwise).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# Share the cores between the ranks: OpenMP threads per rank = cores / NPROCS, at least 1.
CORES=$(nproc)
THREADS=$(( CORES / NPROCS ))
(( THREADS >= 1 )) || THREADS=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS_OVERRIDE:-$THREADS}

# Where the ranks train: train.device as tessera itself resolves it (the recipe, then the
# --set overrides); a recipe it cannot read ends the launch here, with its message.
DEVICE=$("$TESSERA" recipe "$RECIPE" "$@" --get train.device) || exit 2

GPU_ARGS=()
if [[ $DEVICE == cuda ]]; then
  # The GPUs this machine's ranks see: CUDA_VISIBLE_DEVICES's list, else nvidia-smi's.
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -r -a VISIBLE <<<"$CUDA_VISIBLE_DEVICES"
    GPUS=${#VISIBLE[@]}
  elif command -v nvidia-smi >/dev/null; then
    GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  else
    GPUS=""
  fi
  echo "train.sh: train.device=cuda: GPUs here: ${GPUS:-unknown}; rank r of a machine uses GPU r % (GPUs it sees)" >&2
  # With a host file the ranks spread over machines, and this machine's count says little.
  if [[ -n $GPUS && ! ${MPIRUN_ARGS:-} =~ (^|[[:space:]])(-H|--host|-host|--hostfile|-hostfile|--machinefile|-machinefile)([[:space:]=]|$) ]]; then
    if (( GPUS == 0 )); then
      echo "train.sh: warning: no GPU visible here (CUDA_VISIBLE_DEVICES or nvidia-smi)" >&2
    elif (( NPROCS > GPUS )); then
      echo "train.sh: warning: more ranks than GPUs here ($NPROCS > $GPUS): ranks would share a GPU, which NCCL refuses; start at most $GPUS" >&2
    fi
  fi
  # mpirun sets the environment of ranks on other machines only from -x.
  while read -r name; do GPU_ARGS+=(-x "$name"); done < <(compgen -e | grep '^NCCL_' || true)
fi

echo "train.sh: $NPROCS ranks x $OMP_NUM_THREADS threads on $CORES cores: $TESSERA train $RECIPE $*" >&2
# --bind-to none: Open MPI would otherwise pin each rank to one core and its OpenMP
# threads with it.
# shellcheck disable=SC2086
exec mpirun -n "$NPROCS" --bind-to none -x OMP_NUM_THREADS ${GPU_ARGS[@]+"${GPU_ARGS[@]}"} ${MPIRUN_ARGS:-} \
  "$TESSERA" train "$RECIPE" "$@"
