"""The TensorRT backend and its plumbing (ARCHITECTURE §4): `availability` (the one check that
TensorRT and a GPU are usable), `gpu` (CUDA device discovery), `cuda` (the cuda-python calls),
`engine_file` (the engine header and a folder's engines), `plugin_library` (loading the warpres
plugins), `device` (the session's CUDA device), `backend` (what the registry creates) and
`selftest`. Nothing here imports TensorRT or cuda-python at import time.
"""
