#!/usr/bin/env python3
"""A cheap synthetic objective that behaves like `tessera train` for the sweeper.

  objective.py RECIPE --set key=value ... (the arguments a trial's `tessera train` gets)

Reads optim.lr and optim.weight_decay (and optional train.steps, default 20) from the
--set arguments and writes <log.dir>/<run-id>/run.jsonl with a metric event per step
whose `loss` decays towards f(lr, wd) = (log10(lr) + 2.5)^2 + 25 (wd - 0.05)^2, the
optimum at lr = 10^-2.5, wd = 0.05, and a final eval event with val_loss = f. Used by
the sweep tests in place of training (the sweep file's trial.command).
"""
import json
import math
import os
import sys
import time


def main():
    sets = {}
    args = sys.argv[2:]
    for i in range(0, len(args) - 1, 2):
        if args[i] == "--set":
            key, value = args[i + 1].split("=", 1)
            sets[key] = value
    if sets.get("train.seed") == "666":
        print("objective.py: refusing train.seed 666 (a failing trial for the tests)", file=sys.stderr)
        sys.exit(3)
    sleep = float(os.environ.get("OBJECTIVE_SLEEP_S", "0"))
    lr = float(sets.get("optim.lr", "0.001"))
    wd = float(sets.get("optim.weight_decay", "0.1"))
    steps = int(sets.get("train.steps", "20"))
    f = (math.log10(lr) + 2.5) ** 2 + 25 * (wd - 0.05) ** 2
    run_dir = os.path.join(sets["log.dir"], time.strftime("%Y%m%d-%H%M%S-") + "%06x" % (os.getpid() & 0xFFFFFF))
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "run.jsonl"), "w", buffering=1) as log:
        log.write(json.dumps({"event": "run_start", "schema_version": 1}) + "\n")
        for step in range(1, steps + 1):
            loss = f + 3.0 * math.exp(-step / 5.0)
            log.write(json.dumps({"event": "metric", "step": step, "loss": loss}) + "\n")
            time.sleep(sleep)
        log.write(json.dumps({"event": "eval", "step": steps, "val_loss": f}) + "\n")
        log.write(json.dumps({"event": "run_end", "status": "ok", "reason": "", "step": steps}) + "\n")


if __name__ == "__main__":
    main()
