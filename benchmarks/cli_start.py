"""`vidtray --help` against `python -c pass` (alternating runs), and a check that neither
`--help` nor `storage` imports torch, diffusers, transformers, the tray's GUI toolkits or the library page's
web stack.

    python benchmarks/cli_start.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, time_cmd  # noqa: E402

HEAVY = ("torch", "diffusers", "transformers", "pystray", "gi", "starlette", "uvicorn", "jinja2")
PROBE = """
import json, sys, io, contextlib
from vidtray.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main({args!r})
    except SystemExit:
        pass
print(json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    t_help, t_pass = alternate(lambda: time_cmd([sys.executable, "-m", "vidtray", "--help"]),
                               lambda: time_cmd([sys.executable, "-c", "pass"]), args.rounds)
    print(f"python -c pass     median {t_pass * 1000:7.1f} ms")
    print(f"vidtray --help     median {t_help * 1000:7.1f} ms")
    print(f"ratio: {t_help / t_pass:.2f}x")
    ok = True
    for argv in (["--help"], ["storage", "--json"]):
        out = subprocess.run([sys.executable, "-c", PROBE.format(args=argv, heavy=HEAVY)], capture_output=True,
                             text=True, check=True).stdout
        heavy = json.loads(out.strip().splitlines()[-1])
        ok &= not heavy
        print(f"vidtray {' '.join(argv)}: heavy modules imported: {heavy or 'none'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
