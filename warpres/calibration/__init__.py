"""Reduced precision from measurement: calibration data from the dataflow, INT8 / mixed plans."""
