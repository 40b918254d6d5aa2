"""Defences against hostile or broken checkpoints.

``restricted_unpickler``: Python's unpickler with every global answered by winspect's own
reconstructors or an inert placeholder (nothing named in a file is imported or called), and
NumPy arrays rebuilt from raw bytes. ``pickle_scan``: which globals a file's pickles would
import, found by reading their opcodes within bounds (nothing is executed). ``zipcheck``:
bounds on a zip archive's members, checked from its central directory before any member is read.
"""
