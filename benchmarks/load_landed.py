"""The ``load`` scenario as it was before the hot-set rewrite (smmu 8cb29ed,
smmu/scenarios/load.py), kept only so that ``bench_checker.py`` measures the old cost per
schedule in the same run as the new one: 4 CPUs and 3 devices over 4,096 pages, operations
spread uniformly (1-8 pages at a random place), devices reading and writing 400 random
pages each. Registered as ``load-landed`` when imported; not part of the library."""

from __future__ import annotations

import random

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import SmmuError
from smmu.scenarios.kit import (Join, cpu_reads, device_loop, exporter_fork, kswapd, pages,
                                register_builder, tolerant)
from smmu.scenarios.registry import SCENARIOS, attach_driver

NAME = "load-landed"
OPS = ("write", "read", "mprotect", "dontneed", "reclaim", "migrate", "fork")
CPUS, DEVICES, NPAGES, OPS_PER_CPU, ACCESSES_PER_DEVICE = 4, 3, 4096, 40, 400


def _cpu(sim, mm, buf, npages, rng, nops, cpu, drvs):
    def span():
        a = rng.randrange(npages)
        n = rng.randint(1, min(8, npages - a))
        return buf + a * PAGE_SIZE, n * PAGE_SIZE

    children = []
    for k in range(nops):
        op = rng.choice(OPS)
        va, length = span()
        if op == "write":
            yield from tolerant(mm.write(va, 100_000 * (cpu + 1) + k))
        elif op == "read":
            yield from tolerant(mm.read(va))
        elif op == "mprotect":
            yield from tolerant(mm.mprotect(va, length, "r"))
            yield from tolerant(mm.mprotect(va, length, "rw"))
        elif op == "dontneed":
            yield from tolerant(mm.madvise(va, length, "dontneed"))
        elif op == "reclaim":
            yield from kswapd(sim, mm, va, length)
        elif op == "migrate":
            yield from tolerant(sim.migrate(mm, va, length))
        elif op == "fork" and not children:
            child = yield from tolerant(exporter_fork(mm, drvs))
            if not isinstance(child, SmmuError):
                children.append(child)
    for child in children:
        yield from tolerant(child.exit())


def build(sim, driver_cls):
    """The landed load (8cb29ed): 4 CPUs and 3 devices over 4,096 pages, uniform mixes."""
    rng = random.Random((sim.seed or 0) * 7919 + 2)
    mm = sim.new_process("load")
    n = NPAGES
    buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw", populate=True))
    vas = pages(buf, n)
    drvs = [attach_driver(sim, driver_cls, mm) for _ in range(DEVICES)]
    j = Join(sim)
    for c in range(CPUS):
        r = random.Random(rng.random())
        j.spawn(f"cpu{c}", _cpu(sim, mm, buf, n, r, OPS_PER_CPU, c, drvs))
    for d, drv in enumerate(drvs):
        r = random.Random(rng.random())
        sel = [vas[r.randrange(n)] for _ in range(ACCESSES_PER_DEVICE)]
        j.spawn(f"dev{d}", device_loop(drv, sel, rounds=1, write="alt",
                                       base=1_000_000 * (d + 1)))
    j.then("check", cpu_reads(mm, sorted(set(vas[:: max(1, n // 64)]))))


if NAME not in SCENARIOS:
    register_builder(NAME, build, tags=("load", "benchmark"))
