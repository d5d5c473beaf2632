"""Editing many photos: the per-photo steps (pipeline), what a job reads (inputs), its results
table and resumption (results), the Ray Data pipeline (distributed) and the job (job).

`warpres edit` runs the steps in its own process; `warpres batch` inline or on Ray, with a
results table and resumption. Ray is imported only when a job runs on it.
"""
