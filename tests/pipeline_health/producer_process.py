"""A service process for the stale-producer test: calls through a real Profiler until killed.

Run as ``python producer_process.py SETTINGS_JSON``; prints ``sending`` once the first calls
are enqueued.
"""

from __future__ import annotations

import sys
import time

import orjson

from promptprof import Profiler, load_settings
from promptprof._profiler import make_spec


def main(settings_json: str) -> None:
    """Enqueue a call every 10 ms until killed."""
    profiler = Profiler(load_settings(**orjson.loads(settings_json)))
    spec = make_spec("killed", "v1", model="m-test")
    announced = False
    while True:
        call = profiler.start_call(spec)
        if call is not None:
            call.end_ns = call.start_ns + 20_000_000
            profiler.enqueue(call)
        if not announced:
            print("sending", flush=True)
            announced = True
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1])
