#!/usr/bin/env python3
"""A synthetic trial for bench/sweep_overhead.py that records when it runs.

  sweep_objective.py [--step-seconds S] [--exit-jitter J] RECIPE --set key=value ...

Behaves like tests/tuning/objective.py (the arguments a trial's `tessera train` gets; it
reads optim.lr, optim.weight_decay and train.steps, default 20, from the --set
arguments) and writes <log.dir>/<run-id>/run.jsonl: a run_start event whose "time" is
the moment this process began (ISO-8601 UTC with milliseconds, like the sweep journal)
and "t" the same as seconds since the epoch (full precision), then one metric line per
step with loss and val_loss, each with its own "time" and "t", written and flushed
after a sleep of a random 0.5-1.5 x S (default 0: all at once; random so that the steps
keep no fixed phase against the sweeper's poll), a final eval event, and a run_end with
the time it ended: status ok after a random sleep of 0 to J seconds (default 0; so that
the next trial's submission falls at a random moment against Slurm's scheduler ticks),
or "stopped" at once when SIGTERM or SIGUSR1 came (the sweeper's cancel), after which it
exits 75 like Tessera does. The objective falls towards
f(lr, wd) = (log10(lr) + 2.5)^2 + 25 (wd - 0.05)^2, so trials differ and ASHA has
something to decide.
"""
import time

T_START = time.time()  # the first thing: the trial's command start

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

STOP = []
SLEEPING = []


class Stopped(Exception):
    pass


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def main():
    args = sys.argv[1:]
    step_seconds, exit_jitter = 0.0, 0.0
    while args[:1] in (["--step-seconds"], ["--exit-jitter"]):
        if args[0] == "--step-seconds":
            step_seconds = float(args[1])
        else:
            exit_jitter = float(args[1])
        args = args[2:]
    sets = {}
    rest = args[1:]  # args[0] is the recipe
    for i in range(0, len(rest) - 1, 2):
        if rest[i] == "--set":
            key, value = rest[i + 1].split("=", 1)
            sets[key] = value
    lr = float(sets.get("optim.lr", "0.001"))
    wd = float(sets.get("optim.weight_decay", "0.1"))
    steps = int(sets.get("train.steps", "20"))
    f = (math.log10(lr) + 2.5) ** 2 + 25 * (wd - 0.05) ** 2

    def on_stop(signum, frame):
        STOP.append(signum)
        if SLEEPING:  # leave the step's sleep at once; a line being written is finished first
            raise Stopped()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_stop)

    run_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime(T_START)) + "%06x" % (os.getpid() & 0xFFFFFF)
    run_dir = os.path.join(sets["log.dir"], run_id)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "run.jsonl"), "w") as log:
        def write(event):
            log.write(json.dumps(event) + "\n")
            log.flush()

        write({"event": "run_start", "schema_version": 1, "time": iso(T_START), "t": T_START,
               "pid": os.getpid(), "job_id": os.environ.get("SLURM_JOB_ID", "")})
        step = 0
        for step in range(1, steps + 1):
            if step_seconds > 0:
                try:
                    SLEEPING.append(1)
                    if not STOP:
                        time.sleep(random.uniform(0.5, 1.5) * step_seconds)
                except Stopped:
                    pass
                finally:
                    SLEEPING.clear()
            if STOP:
                step -= 1
                break
            loss = f + 3.0 * math.exp(-step / 5.0)
            now = time.time()
            write({"event": "metric", "step": step, "loss": loss, "val_loss": loss, "time": iso(now), "t": now})
        if STOP:
            now = time.time()
            write({"event": "run_end", "status": "stopped", "reason": "signal %d" % STOP[0], "step": step,
                   "time": iso(now), "t": now})
            sys.exit(75)
        now = time.time()
        write({"event": "eval", "step": steps, "val_loss": f, "time": iso(now), "t": now})
        if exit_jitter > 0:
            time.sleep(random.uniform(0, exit_jitter))
        now = time.time()
        write({"event": "run_end", "status": "ok", "reason": "", "step": steps, "time": iso(now), "t": now})


if __name__ == "__main__":
    main()
