"""Small media files for CLI tests."""

import wave

import numpy as np


def sine_wav(path, seconds: float, rate: int = 16000) -> None:
    """A mono 16-bit WAV of ``seconds`` of a sine tone."""
    samples = (np.sin(np.arange(int(rate * seconds)) * 0.1) * 8000).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(samples.tobytes())
