"""Training-time helpers for WarpRes (flow teachers and losses)."""
