"""Signalling a training job at a chosen point of its run, whatever Slurm's latency.

A test run of a few hundred 2 ms steps can end before a signal has gone through
slurmctld, slurmd, the batch shell and the launcher. The tests hold the job's ranks
(SIGSTOP) a few steps in, have Slurm send the signal, and let the ranks go (SIGCONT) once
the signal is pending on each of them: it then lands mid-run every time.
Standard library only.
"""
import os
import signal
import time


def train_pids(tessera, marker):
    """The running `tessera train` processes (of this binary) with `marker` in an argument."""
    binary, marker = os.path.realpath(tessera), marker.encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.readlink("/proc/%s/exe" % entry) == binary:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
                if len(argv) > 1 and argv[1] == b"train" and any(marker in a for a in argv):
                    pids.append(int(entry))
        except OSError:
            continue  # ended meanwhile, or not ours to read
    return pids


def hold_when(tessera, marker, ranks, ready, fail, timeout=180):
    """Polls every 10 ms until `ranks` training processes with `marker` run and ready()
    is true (ready may call fail to give up), then SIGSTOPs them; returns their pids."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = train_pids(tessera, marker)
        if len(pids) == ranks and ready():
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            return pids
        time.sleep(0.01)
    fail("%d training processes with %r were not ready within %d s (found %s)"
         % (ranks, marker, timeout, train_pids(tessera, marker)))


def signal_while_held(pids, send, signo, fail, timeout=30):
    """Runs send() (which has Slurm signal the job) while `pids` are stopped, and lets them
    go once `signo` is pending on every one still stopped (Slurm itself sends SIGCONT
    before the SIGTERM of a requeue or cancel)."""
    bit = 1 << (signo - 1)
    try:
        send()
        deadline = time.time() + timeout
        while True:
            waiting = [pid for pid in pids if stopped_without(pid, bit)]
            if not waiting:
                return
            if time.time() > deadline:
                fail("signal %d not pending on the stopped ranks %s within %d s"
                     % (signo, waiting, timeout))
            time.sleep(0.05)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def stopped_without(pid, bit):
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except FileNotFoundError:
        return False  # it ended: it was let go and has taken the signal
    pending = (int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & bit
    return fields["State"].startswith("T") and not pending
