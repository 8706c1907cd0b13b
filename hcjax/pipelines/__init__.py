"""Inputs -> latents -> video, one module per task family."""
