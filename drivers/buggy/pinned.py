"""Broken variants of :class:`drivers.PINNED`: each overrides only what breaks."""

from __future__ import annotations

from drivers._common import page_of, vpn_of
from drivers.pinned import PINNED


class PinnedEarlyPut(PINNED):
    """Drops the page reference GUP gave it before installing the translation (it keeps
    only the pfn): nothing keeps the page allocated or marks it maybe-DMA-pinned, so exit
    frees it under the device and fork shares it copy-on-write."""

    breaks = ("a driver with no notifier must hold the GUP reference (pin) for as long as "
              "the device may use the translation")
    mirrors = ("drivers that did get_user_pages() + put_page() and kept the physical address "
               "(the 'GUP-then-put' pattern LWN's 2018 GUP articles describe)")
    expected = {"UseAfterFree", "CrossMmAccess", "StaleRead", "LostWrite", "StaleMapping"}
    scenarios = ("exit-while-device-active", "fork-after-pin")
    apis = ("v2008", "range_only", "modern")

    def pin(self, va, write):
        vpn = vpn_of(va)
        pfn = yield from self.mm.pin_user_pages(page_of(va), write=write, longterm=True)
        yield from self.mm.unpin_user_page(pfn)
        if self.mr.lookup(vpn) is not None:
            self.mr.zap(vpn)
        self.mr.map(vpn, pfn, bool(write))
