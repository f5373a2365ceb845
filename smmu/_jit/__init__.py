"""Numba kernels shared by several layers (radix page tables for primary_mm and smmu.shadow)."""
