"""Reducers over the tensor stream."""
