"""The deployable runtime: the stage graph, the per-image cache and the backends (no PyTorch needed)."""
