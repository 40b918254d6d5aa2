"""Defences against hostile or broken checkpoints.

``pickle_scan``: which globals a pickle would import, found by reading its opcodes
(nothing is executed). ``zipcheck``: bounds on a zip archive's members, checked from
its central directory before any member is read.
"""
