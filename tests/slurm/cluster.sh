#!/usr/bin/env bash
# A private single-node Slurm cluster for the tests (ctest label `slurm`).
#
#   tests/slurm/cluster.sh start    start munged, slurmctld and slurmd; wait for an idle node
#   tests/slurm/cluster.sh stop     cancel every job, wait for the empty queue, stop the daemons
#   tests/slurm/cluster.sh status   exit 0 when all three daemons run and the node answers
#   tests/slurm/cluster.sh env      print `export SLURM_CONF=...` for the clients (eval it)
#
# start and stop are idempotent: start on a running cluster and stop on a stopped one do
# nothing. Everything lives in one directory, $TESSERA_SLURM_DIR (default
# /tmp/tessera-slurm): its own munge key and socket, slurm.conf, state and spool
# directories, pid and log files, and jobcomp.txt (one line per finished job). The ports
# are $TESSERA_SLURM_PORT and the one after it (default 6817, 6818).
#
# Exit codes: 0 done; 1 the cluster failed (the daemons' log tails are printed); 77 this
# machine cannot run it (not root, Slurm or munge not installed): the reason is printed,
# and the tests that need the cluster skip.
#
# The test cluster's one deviation from Slurm's defaults that changes what a job sees:
# AuthInfo cred_expire=5 (Slurm refuses less than 5 s), so that a requeued job waits
# cred_expire + 1 = 6 s before it starts again instead of about 2 minutes (120 s + 1).
set -uo pipefail

DIR=${TESSERA_SLURM_DIR:-/tmp/tessera-slurm}
PORT=${TESSERA_SLURM_PORT:-6817}
CRED_EXPIRE=5
START_TIMEOUT=${TESSERA_SLURM_START_TIMEOUT:-60}
STOP_TIMEOUT=${TESSERA_SLURM_STOP_TIMEOUT:-60}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
SOCKET=$MUNGE_DIR/munge.socket
export SLURM_CONF=$CONF

say() { echo "cluster.sh: $*"; }

# Alive = the process exists and is not a zombie (stopped daemons can linger as zombies
# where nothing reaps them).
alive() {
  local pid=$1 state
  [[ -n $pid && -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}
pid_of() { [[ -f $1 ]] && tr -dc '0-9' <"$1"; }
munged_pid() { pid_of "$MUNGE_DIR/munged.pid"; }
slurmctld_pid() { pid_of "$DIR/run/slurmctld.pid"; }
slurmd_pid() { pid_of "$DIR/run/slurmd.pid"; }

node_state() { timeout 15 sinfo -h -o %t 2>/dev/null | head -1; }

running() {
  alive "$(munged_pid)" && alive "$(slurmctld_pid)" && alive "$(slurmd_pid)" &&
    [[ -f $CONF ]] && [[ -n $(node_state) ]]
}

log_tails() {
  local f
  for f in "$MUNGE_DIR/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
    [[ -f $f ]] || continue
    echo "---- last lines of $f"
    tail -n 20 "$f"
  done
}

# Why this machine cannot run the cluster, or nothing.
cannot_run() {
  [[ $(id -u) -eq 0 ]] || { echo "not root (the test cluster runs its daemons as root)"; return; }
  local tool
  for tool in munged mungekey slurmctld slurmd sinfo sbatch squeue scancel scontrol; do
    command -v "$tool" >/dev/null ||
      { echo "$tool not found (apt-get install slurmctld slurmd slurm-client munge)"; return; }
  done
  id munge >/dev/null 2>&1 || echo "no user 'munge' (apt-get install munge)"
}

write_config() {
  local node host
  node=$(slurmd -C | head -1) || return 1
  host=$(hostname -s)
  mkdir -p "$DIR"/{state,spool,run,log}
  cat >"$CONF" <<EOF
# Written by tests/slurm/cluster.sh: a private single-node test cluster in $DIR.
ClusterName=tessera-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# cred_expire: 5 s is Slurm's minimum; a requeued job starts again after cred_expire + 1 s.
AuthInfo=socket=$SOCKET,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
EnforcePartLimits=ALL
ReturnToService=2
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munged() {
  mkdir -p "$MUNGE_DIR"
  chown munge:munge "$MUNGE_DIR" && chmod 755 "$MUNGE_DIR"
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force >/dev/null || return 1
  fi
  chown munge:munge "$MUNGE_DIR/munge.key" && chmod 400 "$MUNGE_DIR/munge.key"
  rm -f "$SOCKET" "$SOCKET.lock"
  runuser -u munge -- munged --socket="$SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed"
}

wait_idle() {
  local deadline=$((SECONDS + START_TIMEOUT)) state=""
  while ((SECONDS < deadline)); do
    state=$(node_state)
    [[ $state == idle ]] && return 0
    sleep 0.2
  done
  say "the node did not become idle within ${START_TIMEOUT}s (sinfo state: '${state:-no answer}')"
  return 1
}

do_start() {
  local why
  why=$(cannot_run)
  if [[ -n $why ]]; then
    say "cannot start the test Slurm cluster: $why"
    return 77
  fi
  if running; then
    say "already running in $DIR"
    return 0
  fi
  do_stop >/dev/null  # whatever is left of an earlier cluster in this directory
  write_config || { say "slurmd -C failed"; return 1; }
  if ! start_munged || ! slurmctld -f "$CONF" || ! slurmd -f "$CONF" || ! wait_idle; then
    say "failed to start the test Slurm cluster in $DIR"
    log_tails
    do_stop >/dev/null
    return 1
  fi
  say "running in $DIR (node idle); clients need: export SLURM_CONF=$CONF"
}

# TERM, then KILL after 10 s; a zombie counts as stopped.
stop_pid() {
  local name=$1 pid=$2 i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  say "$name ($pid) ignored SIGTERM for 10 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null
  sleep 0.2
}

do_stop() {
  local deadline
  if alive "$(slurmctld_pid)"; then
    # Job processes outlive slurmd: cancel every job and wait for the queue to empty first.
    local jobs
    jobs=$(timeout 15 squeue -h -o %i 2>/dev/null)
    [[ -z $jobs ]] || timeout 15 scancel --quiet $jobs 2>/dev/null
    deadline=$((SECONDS + STOP_TIMEOUT))
    while ((SECONDS < deadline)); do
      [[ -z $(timeout 15 squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
    if [[ -n $(timeout 15 squeue -h -o %i 2>/dev/null) ]]; then
      say "jobs still in the queue after ${STOP_TIMEOUT}s; stopping anyway:"
      timeout 15 squeue 2>/dev/null
    fi
  fi
  stop_pid slurmd "$(slurmd_pid)"
  stop_pid slurmctld "$(slurmctld_pid)"
  stop_pid munged "$(munged_pid)"
  say "stopped ($DIR)"
}

do_status() {
  local name pid
  for name in munged slurmctld slurmd; do
    pid=$("${name}_pid")
    if alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
  done
  if running; then
    echo "node: $(node_state)"
    return 0
  fi
  return 1
}

case ${1:-} in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
