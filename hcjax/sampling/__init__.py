"""Flow-matching schedules, the jit-compiled Euler loop and guidance strategies."""
