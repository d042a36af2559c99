"""`fluxrig-mixer`: the control plane's entry point.

The mixer (CAS store, registry, APIs, embedded NATS hub) is not built yet; until it is, this
command says so plainly instead of pretending to run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mixer import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fluxrig-mixer", description="fluxrig control plane")
    parser.add_argument("--version", action="version", version=f"fluxrig-mixer {__version__}")
    parser.parse_args(argv)
    print(
        "fluxrig-mixer: the control plane is not available in this release yet; "
        "run a standalone rack with `fluxrig run SCENARIO.yaml`",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
