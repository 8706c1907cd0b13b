"""Sharded flow-matching training: state, loss, step, loop, checkpoints, data."""
