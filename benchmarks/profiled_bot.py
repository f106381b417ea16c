"""The bot process of `tests.fakes.bot_process`, with cProfile switched on by SIGUSR1 and dumped by SIGUSR2.

`BENCH_PROFILE_OUT` names the .prof file. Only the event loop's thread is profiled (cProfile's limit):
work sent to threads (image checks, SQLite) shows as the time the loop spent waiting for it, if any.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from types import FrameType

from tests.fakes.bot_process import point_discord_at

_profiler = cProfile.Profile()


def _start(signum: int, frame: FrameType | None) -> None:
    _profiler.enable()


def _stop(signum: int, frame: FrameType | None) -> None:
    _profiler.disable()
    _profiler.dump_stats(os.environ["BENCH_PROFILE_OUT"])


if __name__ == "__main__":
    from bot.__main__ import main

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    point_discord_at(os.environ["FAKE_DISCORD_URL"])
    sys.exit(main(sys.argv[1:]))
