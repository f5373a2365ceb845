"""The device-structures layer: numba-jitted secondary structures drivers may use.

``tlb`` (a set-associative device TLB with ASIDs, :class:`~smmu.devices.tlb.TLB`), ``tlb_ref``
(its pure-Python reference) and ``shadow`` (a shadow / device page table,
:class:`~smmu.devices.shadow.ShadowPageTable`). Given ``observer=driver`` they declare every
translation they install or drop through the driver's ``note_map`` / ``note_unmap_range``.
Imports only the base layer; ``smmu.tlb`` and ``smmu.shadow`` are the public names.
"""
