"""Type checks for ``make lint``: mypy strict on ``hpo/``, a ratchet on ``service/``, ``workers/``.

* ``hpo/`` (the contract and client users import) must be clean under ``--strict``.
* ``service/`` and ``workers/`` are checked with mypy's defaults; their errors per file
  are recorded in ``scripts/mypy-ratchet.json``. A file with more errors than recorded
  (or a new file with any) fails; fewer prints how to shrink the record, which
  ``--update`` writes. The record can only shrink: ``--update`` refuses to grow it
(it writes a first record when there is none).

    python scripts/mypy_ratchet.py [--update]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "scripts" / "mypy-ratchet.json"
ERROR = re.compile(r"^(?P<file>[^:]+\.py):\d+: error:")


def mypy(*args: str) -> tuple[int, str]:
    """Run mypy from the repository root; (exit code, output)."""
    cmd = [sys.executable, "-m", "mypy", "--no-error-summary", "--ignore-missing-imports", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def errors_per_file(output: str) -> Counter[str]:
    return Counter(m["file"] for line in output.splitlines() if (m := ERROR.match(line)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="write the (smaller) record")
    update = parser.parse_args(argv).update

    code, out = mypy("--strict", "hpo")
    strict = errors_per_file(out)
    if code != 0:
        print(out.rstrip())
        print(f"mypy --strict hpo/: {sum(strict.values())} errors (must be 0)")
        return 1
    print("mypy --strict hpo/: 0 errors")

    _, out = mypy("service", "workers")
    now = errors_per_file(out)
    recorded = Counter(json.loads(RECORD.read_text())) if RECORD.exists() else Counter()
    grown = {f: (recorded[f], n) for f, n in sorted(now.items()) if n > recorded[f]}
    if grown and RECORD.exists():
        print(out.rstrip())
        for file, (was, n) in grown.items():
            print(f"{file}: {n} mypy errors, the ratchet allows {was}")
        return 1
    total, allowed = sum(now.values()), sum(recorded.values())
    print(f"mypy service/ workers/: {total} errors (ratchet: {allowed})")
    if update:
        RECORD.write_text(json.dumps(dict(sorted(now.items())), indent=1) + "\n")
        print(f"wrote {RECORD.relative_to(ROOT)}")
    elif total < allowed:
        print("fewer than recorded: run `python scripts/mypy_ratchet.py --update` to shrink it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
