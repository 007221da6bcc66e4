"""``python -m infra.models build [--models-dir DIR] [NAME ...]``: build the local tiny models.

Without names, every one in :data:`infra.models.LOCAL_MODELS`; without ``--models-dir``, the
deployment's ``LOUPE_MODELS_DIR`` (default ``.dev/models``). Prints each model's directory.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from infra.models import LOCAL_MODELS, build_local_models
from services.settings import load_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 once every named model is built; argparse's 2 for a bad command line."""
    parser = _parser()
    args = parser.parse_args(argv)
    models_dir = args.models_dir or load_settings().models_dir
    names = args.names or list(LOCAL_MODELS)
    try:
        build_local_models(models_dir, names)
    except ValueError as exc:  # an unknown name: nothing was built
        parser.error(str(exc))
    for name in names:
        print(models_dir / name)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the local tiny models (idempotent)")
    build.add_argument("--models-dir", type=Path, default=None, help="default: LOUPE_MODELS_DIR")
    build.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(LOCAL_MODELS)}")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
