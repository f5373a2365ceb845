"""The invalidate_page study: was ``invalidate_page`` worth keeping? Workloads run under the
2008 notifier APIs with causal simulated time (:mod:`smmu.study.workloads`), measured through
the observer port (:mod:`smmu.study.observe`), compared like for like over seeds
(:mod:`smmu.study.study`) and reported (:mod:`smmu.study.render`, :mod:`smmu.study.plots`);
:mod:`smmu.study.strace` replays real programs' memory system calls as workloads.
"""
