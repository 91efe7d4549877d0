"""The CPython floor of a future per record: what creating N futures, resolving them in batches
from another thread (as the package's delivery thread does: asyncio ones through
call_soon_threadsafe, concurrent.futures ones directly) and awaiting each costs, with no producer
at all. bench_python.py runs it after the contestants, so that the Python layer's CPU per record
can be read against what the futures alone cost in the same sitting.

Usage: python future_floor.py [N]"""

import asyncio
import concurrent.futures
import queue
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
BATCH = 700  # about what one delivery carries in the benchmark

class R:  # a stand-in receipt: one object per record
    __slots__ = ("a",)

def async_floor():
    async def main():
        loop = asyncio.get_running_loop()
        q = queue.SimpleQueue()
        def resolver():
            while True:
                futs = q.get()
                if futs is None: return
                def settle(futs=futs):
                    for f in futs:
                        if not f.done(): f.set_result(R())
                loop.call_soon_threadsafe(settle)
        t = threading.Thread(target=resolver); t.start()
        c0 = time.process_time()
        futs = []
        pending = []
        for i in range(N):
            f = loop.create_future()
            futs.append(f); pending.append(f)
            if len(pending) == BATCH:
                q.put(pending); pending = []
        q.put(pending)
        out = [await f for f in futs]
        c1 = time.process_time()
        q.put(None); t.join()
        return c1 - c0
    return asyncio.run(main())

def sync_floor():
    q = queue.SimpleQueue()
    def resolver():
        while True:
            futs = q.get()
            if futs is None: return
            for f in futs: f.set_result(R())
    t = threading.Thread(target=resolver); t.start()
    c0 = time.process_time()
    futs, pending = [], []
    for i in range(N):
        f = concurrent.futures.Future()
        futs.append(f); pending.append(f)
        if len(pending) == BATCH:
            q.put(pending); pending = []
    q.put(pending)
    out = [f.result() for f in futs]
    c1 = time.process_time()
    q.put(None); t.join()
    return c1 - c0

for name, fn in (("asyncio", async_floor), ("concurrent.futures", sync_floor)):
    runs = sorted(fn() for _ in range(5))
    print(f"{name}: {runs[2] / N * 1e6:.2f} us per record (runs {runs[0]/N*1e6:.2f}-{runs[-1]/N*1e6:.2f})")
