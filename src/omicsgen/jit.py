"""Numba kernels that libraries compile without `cache=True`, kept on disk all the same.

umap-learn (the report's UMAP) and graphtools (the MAGIC baseline) compile their kernels again in
every process: 5 CPU s of each report job and 3 of each baselines job went to compiling the same
code (bench/figures.md). Numba's cache directory (NUMBA_CACHE_DIR, else beside the library or in
the user's cache) then serves later jobs. The machine code, and so every number, is the same.
"""

from __future__ import annotations


def cache_jit_kernels(*modules) -> None:
    """Let numba cache the compiled kernels defined in `modules`, as `cache=True` would; a kernel
    numba cannot cache is compiled per process, as before."""
    import numba

    for module in modules:
        for kernel in vars(module).values():
            if isinstance(kernel, numba.core.registry.CPUDispatcher):
                try:
                    kernel.enable_caching()
                except Exception:  # noqa: BLE001 - uncacheable: compiled in this process only
                    pass
