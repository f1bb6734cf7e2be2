#!/usr/bin/env bash
# Train a recipe on this machine with NPROCS MPI ranks.
#
#   launchers/mpirun/train.sh NPROCS RECIPE [--set key=value ...]
#   launchers/mpirun/train.sh 4 recipes/tiny.yaml --set parallel.dp=2 --set parallel.tp=2
#
# NPROCS must equal parallel.dp * tp * pp of the recipe (after --set); Tessera checks it at
# start-up on every rank and exits with a message otherwise. The binary is $TESSERA, else
# build/bin/tessera of this checkout. Extra mpirun options go in $MPIRUN_ARGS.
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

echo "train.sh: $NPROCS ranks x $OMP_NUM_THREADS threads on $CORES cores: $TESSERA train $RECIPE $*" >&2
# --bind-to none: Open MPI would otherwise pin each rank to one core and its OpenMP
# threads with it.
# shellcheck disable=SC2086
exec mpirun -n "$NPROCS" --bind-to none -x OMP_NUM_THREADS ${MPIRUN_ARGS:-} \
  "$TESSERA" train "$RECIPE" "$@"
