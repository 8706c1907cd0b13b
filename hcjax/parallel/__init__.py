"""Sharding: logical axis names (``rules``); meshes and sequence parallelism come with the training issues."""
