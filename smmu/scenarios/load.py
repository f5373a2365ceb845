"""Load scenarios: several CPUs and devices, random operation mixes from a seeded RNG
(``load-small`` in the default set; ``load``, tagged ``"load"``, run by name).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from smmu.base.constants import PAGE_SIZE
from smmu.base.errors import SmmuError
from smmu.scenarios.kit import (Join, cpu_reads, device_loop, exporter_fork, kswapd, pages,
                                register_builder, tolerant)
from smmu.scenarios.registry import attach_driver


@dataclass
class LoadShape:
    cpus: int
    devices: int
    npages: int
    ops_per_cpu: int
    accesses_per_device: int


LOAD_OPS = ("write", "read", "mprotect", "dontneed", "reclaim", "migrate", "fork")


def _load_cpu(sim, mm, buf, npages, rng: random.Random, nops: int, cpu: int, modern: bool,
              drvs=()):
    def span():
        a = rng.randrange(npages)
        n = rng.randint(1, min(8, npages - a))
        return buf + a * PAGE_SIZE, n * PAGE_SIZE

    children = []
    for k in range(nops):
        op = rng.choice(LOAD_OPS)
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


def _load_builder(shape: LoadShape, seed_salt: int):
    def build(sim, driver_cls):
        rng = random.Random((sim.seed or 0) * 7919 + seed_salt)
        mm = sim.new_process("load")
        n = shape.npages
        buf = sim.do(mm.mmap(n * PAGE_SIZE, prot="rw", populate=True))
        vas = pages(buf, n)
        drvs = [attach_driver(sim, driver_cls, mm) for _ in range(shape.devices)]
        j = Join(sim)
        modern = sim.notifier_api == "modern"
        for c in range(shape.cpus):
            r = random.Random(rng.random())
            j.spawn(f"cpu{c}", _load_cpu(sim, mm, buf, n, r, shape.ops_per_cpu, c, modern,
                                         drvs))
        for d, drv in enumerate(drvs):
            r = random.Random(rng.random())
            sel = [vas[r.randrange(n)] for _ in range(shape.accesses_per_device)]
            j.spawn(f"dev{d}", device_loop(drv, sel, rounds=1, write="alt",
                                           base=1_000_000 * (d + 1)))
        check = sorted(set(vas[:: max(1, n // 64)]))
        j.then("check", cpu_reads(mm, check))
    build.__doc__ = (f"{shape.cpus} CPUs and {shape.devices} devices over {shape.npages} "
                     f"pages: random operation mixes ({', '.join(LOAD_OPS)}) from a seeded "
                     "RNG, device read/write streams; coherence under load.")
    return build


LOAD_SMALL = LoadShape(cpus=3, devices=2, npages=256, ops_per_cpu=12, accesses_per_device=48)
LOAD = LoadShape(cpus=4, devices=3, npages=4096, ops_per_cpu=40, accesses_per_device=400)


register_builder("load-small", _load_builder(LOAD_SMALL, 1), tags=("load-small",))
register_builder("load", _load_builder(LOAD, 2), tags=("load",))
