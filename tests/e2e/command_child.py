"""A training command for the ``--command`` end-to-end tests (not Python-specific on purpose).

Its behaviour is chosen by the trial's ``mode`` parameter (a categorical with one
choice per test): it reads the trial from ``HPO_PARAMS`` and reports through the
stdout line protocol a program in any language can print.

* ``report``: three ``hpo.report`` lines, then ``hpo.result``;
* ``stubborn``: reports falling values and ignores the prune; starts a
  grandchild (its pid in ``$PIDS``) so the test can check the whole process
  group was killed;
* ``crash``: a traceback-like message on stderr, exit status 3;
* ``slow``: sleeps (the test SIGKILLs the worker meanwhile), then finishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> None:
    params = json.loads(os.environ["HPO_PARAMS"])
    mode, x = params["mode"], float(params.get("x", 0.5))
    if mode == "report":
        for step in (1, 2, 3):
            print(f"hpo.report step={step} value={x * step:.4f} loss={1 / step:.3f}", flush=True)
        print(f"hpo.result value={x * 3:.4f}", flush=True)
    elif mode == "stubborn":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(os.environ["PIDS"], "a") as out:
            out.write(f"{os.getpid()} {grandchild.pid}\n")
        for step in range(1, 400):
            print(f"hpo.report step={step} value={1 / step:.4f}", flush=True)
            time.sleep(0.2)
    elif mode == "crash":
        print("Traceback (most recent call last):\nRuntimeError: out of cheese", file=sys.stderr)
        sys.exit(3)
    elif mode == "slow":
        print("hpo.report step=1 value=0.5", flush=True)
        time.sleep(float(os.environ.get("SLOW_S", "8")))
        print("hpo.result value=0.75", flush=True)


if __name__ == "__main__":
    main()
