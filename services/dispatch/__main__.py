"""``python -m services.dispatch``: run one dispatcher until SIGTERM or SIGINT.

Start as many as you like (two for failover): one leads, the others stand by.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from services.dispatch.root import build_dispatcher_root
from services.settings import load_settings


def main() -> int:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    root = build_dispatcher_root(settings)
    try:
        logging.getLogger("loupe.dispatch").info("dispatcher ready.")
        root.loop.run(stop)
    finally:
        root.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
