"""The audio front end (``hcjax.io.audio``, ``hcjax.conditioning.audio_features``): WAV reading and resampling,
Whisper log-mel parity with ``transformers.WhisperFeatureExtractor`` (both its torch and numpy paths), the
HunyuanCustom / Avatar and HuMo window rules on index-encoded states, their alignment under a shift of the audio,
and the whole chain against a transcription of the references' torch code with tiny random Whisper encoders.
Audio is synthesised here; nothing is downloaded."""

import subprocess
import wave

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder as TorchWhisperEncoder

from hcjax.conditioning.audio_features import (audio_condition, encoder_states, humo_audio_features,
                                               humo_window_indices, log_mel, mel_filters, whisper_windows_custom,
                                               whisper_windows_humo)
from hcjax.convert.whisper import whisper_encoder_from_torch
from hcjax.io.audio import frames_of_audio, load_audio, read_wav, resample
from hcjax.io.video import MediaError
from hcjax.models.audio.whisper import WhisperEncoderConfig

SR = 16000
MEL_TOL = 1e-5


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def chirp(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A rising chirp (100 Hz -> 4 kHz) under a rising envelope, plus a little noise, float32 in [-1, 1]; its
    loudest part is late, so dropping its first samples does not change a chunk's log-mel maximum."""
    t = np.arange(int(round(seconds * sr))) / sr
    dur = max(seconds, 1e-3)
    phase = 2 * np.pi * (100.0 * t + (4000.0 - 100.0) / (2 * dur) * t ** 2)
    env = 0.2 + 0.6 * t / dur
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.shape)
    return (env * np.sin(phase) + noise).astype(np.float32)


def write_wav_int16(path, samples_int16: np.ndarray, rate: int):
    samples_int16 = np.asarray(samples_int16, np.int16)
    if samples_int16.ndim == 1:
        samples_int16 = samples_int16[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples_int16.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples_int16.astype("<i2").tobytes())


def wav_bytes(tag: int, bits: int, channels: int, rate: int, payload: bytes) -> bytes:
    """A minimal RIFF/WAVE file (for encodings the ``wave`` module cannot write)."""
    block = channels * bits // 8
    fmt = (tag.to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * block).to_bytes(4, "little") + block.to_bytes(2, "little") + bits.to_bytes(2, "little"))
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(payload).to_bytes(4, "little")
    body += payload + (b"\0" if len(payload) % 2 else b"")
    return b"RIFF" + len(body).to_bytes(4, "little") + body


# ----------------------------------------------------------------------------------------------------------------
# log-mel


@pytest.fixture(scope="module")
def extractors():
    return {n: WhisperFeatureExtractor(feature_size=n) for n in (80, 128)}


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers(extractors, n_mels):
    ours = mel_filters(n_mels)
    chex.assert_shape(ours, (201, n_mels))
    np.testing.assert_allclose(ours, extractors[n_mels].mel_filters, rtol=1e-12, atol=1e-15)


def reference_log_mel(fe, audio, numpy_path=False):
    """The references' ``get_audio_feature``: the extractor on consecutive 480,000-sample chunks, concatenated in
    time; returned channels last. ``numpy_path`` calls the extractor's numpy implementation on the same padded
    chunks (its default with torch installed is the torch STFT)."""
    out = []
    for i in range(0, len(audio), 480_000):
        piece = audio[i:i + 480_000]
        if numpy_path:
            padded = np.zeros(480_000, np.float32)
            padded[:len(piece)] = piece
            feats = fe._np_extract_fbank_features(padded[None], "cpu")
        else:
            feats = fe(piece, sampling_rate=SR, return_tensors="np").input_features
        out.append(feats[0].T)
    return np.concatenate(out, axis=0)


@pytest.mark.parametrize("seconds,n_mels", [(3.0, 80), (31.0, 80), (3.0, 128)])
def test_log_mel_parity(extractors, seconds, n_mels):
    fe = extractors[n_mels]
    audio = chirp(seconds)
    ours = log_mel(audio, n_mels)
    chunks = -(-len(audio) // 480_000)
    chex.assert_shape(ours, (3000 * chunks, n_mels))
    assert ours.dtype == np.float32
    ref_torch = reference_log_mel(fe, audio)
    ref_numpy = reference_log_mel(fe, audio, numpy_path=True)
    err_torch, err_numpy = rel_l2(ours, ref_torch), rel_l2(ours, ref_numpy)
    print(f"log-mel {seconds}s/{n_mels} mels: rel L2 vs torch path {err_torch:.2e} (max abs "
          f"{np.abs(ours - ref_torch).max():.2e}), vs numpy path {err_numpy:.2e} (max abs "
          f"{np.abs(ours - ref_numpy).max():.2e})")
    assert err_torch < MEL_TOL and err_numpy < MEL_TOL
    if chunks > 1:
        # the extractor on the whole clip truncates to 30 s: our first chunk
        whole = fe(audio, sampling_rate=SR, return_tensors="np").input_features[0].T
        assert rel_l2(ours[:3000], whole) < MEL_TOL
        np.testing.assert_array_equal(log_mel(audio, n_mels, max_chunks=1), ours[:3000])


def test_log_mel_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        log_mel(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((100, 2), np.float32))


# ----------------------------------------------------------------------------------------------------------------
# load_audio


def test_load_audio_16k_round_trip_is_exact(tmp_path):
    ints = np.round(chirp(1.3) * 32767).astype(np.int16)
    path = tmp_path / "a.wav"
    write_wav_int16(path, ints, SR)
    got = load_audio(path)
    assert got.dtype == np.float32 and got.shape == ints.shape
    np.testing.assert_array_equal(got, ints.astype(np.float32) / 32768.0)  # soundfile/librosa scaling
    assert frames_of_audio(len(got)) == len(got) // 640


def test_load_audio_48k_stereo_to_16k_mono(tmp_path):
    rate, seconds, f0 = 48000, 1.0, 440.0
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.5 * np.sin(2 * np.pi * f0 * t), 0.25 * np.sin(2 * np.pi * f0 * t)
    ints = np.round(np.stack([left, right], 1) * 32767).astype(np.int16)
    path = tmp_path / "stereo48k.wav"
    write_wav_int16(path, ints, rate)
    samples, got_rate = read_wav(path)
    chex.assert_shape(samples, (len(t), 2))
    assert got_rate == rate
    got = load_audio(path)
    chex.assert_shape(got, (int(np.ceil(len(t) / 3)),))  # librosa's length: ceil(N * 16000 / 48000)
    expected = 0.375 * np.sin(2 * np.pi * f0 * np.arange(len(got)) / SR)  # the channel mean
    interior = slice(100, -100)  # the band-limited resampler sees zeros outside the clip
    err = np.abs(got[interior] - expected[interior]).max()
    print(f"48 kHz stereo -> 16 kHz mono: max error vs the analytic 16 kHz tone {err:.2e}")
    assert err < 1e-3


def test_resample_rejects_aliases_and_keeps_tones():
    t = np.arange(44100) / 44100
    tone = resample(np.sin(2 * np.pi * 1000.0 * t), 44100, SR)
    chex.assert_shape(tone, (16000,))
    ref = np.sin(2 * np.pi * 1000.0 * np.arange(16000) / SR)
    assert np.abs(tone - ref)[100:-100].max() < 1e-3
    alias = resample(np.sin(2 * np.pi * 12000.0 * t), 44100, SR)  # above the 8 kHz target Nyquist
    assert np.abs(alias[100:-100]).max() < 1e-3


def test_read_wav_float_and_24_bit(tmp_path):
    x = chirp(0.2)
    path = tmp_path / "f32.wav"
    path.write_bytes(wav_bytes(3, 32, 1, SR, x.astype("<f4").tobytes()))
    np.testing.assert_array_equal(load_audio(path), x)
    ints = np.array([0, 1, -1, 2 ** 23 - 1, -2 ** 23, 12345, -54321], np.int64)
    payload = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in ints)
    path = tmp_path / "s24.wav"
    path.write_bytes(wav_bytes(1, 24, 1, SR, payload))
    np.testing.assert_array_equal(load_audio(path), (ints / 2 ** 23).astype(np.float32))


def test_load_audio_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(MediaError, match="nope.wav"):
        load_audio(missing)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(MediaError, match="garbage.wav"):
        load_audio(garbage)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    with pytest.raises(MediaError, match="broken.wav"):
        load_audio(broken)
    empty = tmp_path / "empty.wav"
    write_wav_int16(empty, np.zeros(0, np.int16), SR)
    with pytest.raises(MediaError, match="empty.wav"):
        load_audio(empty)


def test_load_audio_decodes_other_formats_with_ffmpeg(tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    ints = np.round(chirp(0.5) * 32767).astype(np.int16)
    src, flac = tmp_path / "a.wav", tmp_path / "a.flac"
    write_wav_int16(src, ints, SR)
    subprocess.run([exe, "-nostdin", "-v", "error", "-i", str(src), str(flac)], check=True)
    np.testing.assert_array_equal(load_audio(flac), ints.astype(np.float32) / 32768.0)  # lossless


def test_frames_of_audio():
    assert frames_of_audio(640 * 129 + 639) == 129
    assert frames_of_audio(640 * 129 - 1) == 128
    assert frames_of_audio(16000, fps=12.5) == 12
    assert frames_of_audio(0) == 0


# ----------------------------------------------------------------------------------------------------------------
# windows on index-encoded states


def index_states(t_enc: int, n_states: int, channels: int) -> np.ndarray:
    """``[t_enc, n_states, channels]`` whose value at step t is ``t + 1`` (0 is left for the zero padding), plus
    the state index / 1000 so that the state axis is checked too."""
    t = np.arange(t_enc, dtype=np.float32)[:, None, None] + 1.0
    s = np.arange(n_states, dtype=np.float32)[None, :, None] / 1000.0
    return np.broadcast_to(t + s, (t_enc, n_states, channels)).astype(np.float32)


def test_custom_windows_rule():
    states = index_states(1500, 5, 3)
    w = np.asarray(whisper_windows_custom(states, 129))
    chex.assert_shape(w, (129, 10, 5, 3))
    for f in (0, 1, 2, 64, 128):
        steps = 2 * f - 4 + np.arange(10)  # encoder steps 2f-4 ... 2f+5
        expected = np.where(steps[:, None, None] >= 0, states[np.clip(steps, 0, None)], 0.0)
        np.testing.assert_array_equal(w[f], expected)
    # frame 0: 4 zero rows then steps 0..5
    np.testing.assert_array_equal(w[0, :, 0, 0], [0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
    # frames past the audio are zero; the 400-frame cap (Avatar); 12.5 fps stride
    w = np.asarray(whisper_windows_custom(states, 129, num_audio_frames=100))
    assert np.all(w[100:] == 0) and np.all(w[99, 2:] != 0)
    assert np.all(np.asarray(whisper_windows_custom(states, 410, max_frames=400))[400:] == 0)
    w2 = np.asarray(whisper_windows_custom(states, 10, stride=2))
    np.testing.assert_array_equal(w2[3], np.asarray(whisper_windows_custom(states, 10))[6])
    # rows beyond the encoder states are zero instead of a short window
    w = np.asarray(whisper_windows_custom(states[:20], 12))
    chex.assert_shape(w, (12, 10, 5, 3))
    np.testing.assert_array_equal(w[11, :2, 0, 0], [19, 20])  # steps 18, 19 of 20
    assert np.all(w[11, 2:] == 0)


def test_custom_windows_shift_by_one_video_frame():
    """Audio advanced by one video frame (640 samples = 2 encoder steps): window f of the shifted states is
    window f + 1 of the original, wherever neither reaches the zero padding."""
    states = index_states(1500, 5, 4)
    orig = np.asarray(whisper_windows_custom(states, 129))
    shifted = np.asarray(whisper_windows_custom(states[2:], 129))
    np.testing.assert_array_equal(shifted[2:128], orig[3:129])
    assert not np.array_equal(shifted[0], orig[1])  # frames 0-1 see the prepended zeros


def torch_humo_features(states: torch.Tensor, audio_len: int) -> torch.Tensor:
    """HuMo's ``audio_emb_enc`` (whisper): 8/8/8/8 + last means, 50 -> 25 Hz ``F.interpolate`` with
    ``align_corners=True``; ``states [1, T, 33, C]`` already cut to ``2 * audio_len`` steps."""
    def interp(x):  # [1, T, C] -> [1, T // 2, C]
        size = int(x.shape[1] / 50.0 * 25)
        return torch.nn.functional.interpolate(x.transpose(1, 2), size=size, align_corners=True,
                                               mode="linear").transpose(1, 2)
    groups = [interp(states[:, :, i:i + 8].mean(dim=2)) for i in range(0, 32, 8)] + [interp(states[:, :, 32])]
    return torch.stack(groups, dim=2)[0]


def torch_humo_windows(emb: torch.Tensor, frame_num: int, frame0: int = 0, shift: int = 2) -> torch.Tensor:
    """HuMo's ``get_audio_emb_window``, restated: per latent frame 8 slots, out-of-range frames zero."""
    zero = torch.zeros_like(emb[0])
    def pick(i):
        return emb[i] if 0 <= i < emb.shape[0] else zero
    windows = []
    for lt in range(1 + (frame_num - 1) // 4):
        if lt == 0:
            frames = [torch.zeros_like(zero)] * 3 + [pick(i) for i in range(frame0 - 2, frame0 + 3)]
        else:
            frames = [pick(i) for i in range(frame0 + 1 + 4 * (lt - 1) - shift, frame0 + 1 + 4 * lt + shift)]
        windows.append(torch.stack(frames))
    return torch.stack(windows)


def test_humo_features_match_reference_interpolation():
    rng = np.random.default_rng(1)
    for audio_len in (129, 1, 7):
        states = rng.standard_normal((2 * audio_len + 5, 33, 6)).astype(np.float32)
        ours = np.asarray(humo_audio_features(states, audio_len))
        chex.assert_shape(ours, (audio_len, 5, 6))
        ref = torch_humo_features(torch.from_numpy(states[None, :2 * audio_len]), audio_len).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_humo_windows_rule_and_shapes():
    states = index_states(1500, 33, 2)
    feats = humo_audio_features(states, 129)
    chex.assert_shape(feats, (129, 5, 2))
    w = whisper_windows_humo(feats, 129)
    chex.assert_shape(w, (33, 8, 5, 2))
    chex.assert_shape(whisper_windows_humo(feats, 129, num_ref=1), (34, 8, 5, 2))
    assert np.all(np.asarray(whisper_windows_humo(feats, 129, num_ref=1))[33] == 0)
    idx = humo_window_indices(129)
    np.testing.assert_array_equal(idx[0], [-1, -1, -1, -2, -1, 0, 1, 2])
    np.testing.assert_array_equal(idx[1], np.arange(-1, 7))
    np.testing.assert_array_equal(idx[32], np.arange(123, 131))
    frames = index_states(40, 5, 3)  # 25 Hz features whose frame t holds t + 1
    for frame_num, frame0 in ((129, 0), (97, 0), (33, 5)):
        ours = np.asarray(whisper_windows_humo(frames, frame_num, frame0=frame0))
        ref = torch_humo_windows(torch.from_numpy(frames), frame_num, frame0).numpy()
        np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(np.asarray(whisper_windows_humo(frames, 9))[:, :, 0, 0],
                                  [[0, 0, 0, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11]])


def test_humo_windows_shift():
    """A latent frame is 4 video frames: features advanced by 4 frames (2560 samples) move window i + 1 to i,
    and features advanced by one frame equal ``frame0=1``, wherever the windows do not reach before frame 0
    (window 1 spans frames -1 ... 6)."""
    frames = index_states(200, 5, 3)
    orig = np.asarray(whisper_windows_humo(frames, 129))
    shifted = np.asarray(whisper_windows_humo(frames[4:], 129))
    np.testing.assert_array_equal(shifted[2:32], orig[3:33])
    assert not np.array_equal(shifted[1], orig[2])
    by_frame0 = np.asarray(whisper_windows_humo(frames, 129, frame0=1))
    np.testing.assert_array_equal(np.asarray(whisper_windows_humo(frames[1:], 129))[2:], by_frame0[2:])


# ----------------------------------------------------------------------------------------------------------------
# the whole chain with tiny random Whisper encoders


def tiny_cfg(layers: int) -> WhisperEncoderConfig:
    return WhisperEncoderConfig(num_mel_bins=80, d_model=16, encoder_layers=layers, encoder_attention_heads=2,
                                encoder_ffn_dim=32)


def torch_encoder(cfg: WhisperEncoderConfig, seed: int) -> TorchWhisperEncoder:
    hf = WhisperConfig(num_mel_bins=cfg.num_mel_bins, d_model=cfg.d_model, encoder_layers=cfg.encoder_layers,
                       encoder_attention_heads=cfg.encoder_attention_heads, encoder_ffn_dim=cfg.encoder_ffn_dim,
                       max_source_positions=cfg.max_source_positions, decoder_layers=1, decoder_attention_heads=2,
                       decoder_ffn_dim=32, vocab_size=64, max_target_positions=16, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    enc = TorchWhisperEncoder(hf).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return enc


@pytest.fixture(scope="module")
def fe80():
    return WhisperFeatureExtractor(feature_size=80)


@pytest.fixture(scope="module")
def tiny4():
    """A random 4-layer encoder (5 hidden states, as whisper-tiny) in torch and as hcjax params."""
    cfg = tiny_cfg(4)
    enc = torch_encoder(cfg, 0)
    return cfg, enc, whisper_encoder_from_torch(enc.state_dict(), cfg)


def test_end_to_end_shift_with_a_local_whisper(tiny4):
    """A random encoder made local (zero position table, zero attention output: only the convolutions and
    per-step layers remain, so it commutes with time shifts; real Whisper attends globally and adds absolute
    positions, which no input shift can commute with). Advancing the audio by 640 samples then moves every
    interior window by exactly one video frame: this checks the log-mel hop, the conv stride and the window
    bookkeeping together."""
    cfg, _, full = tiny4
    params = jax.tree.map(jnp.asarray, full)
    params["embed_positions"]["embedding"] = jnp.zeros_like(params["embed_positions"]["embedding"])
    attn_out = params["layers"]["self_attn"]["out_proj"]
    params["layers"]["self_attn"]["out_proj"] = jax.tree.map(jnp.zeros_like, attn_out)
    audio = chirp(6.0)
    orig = np.asarray(audio_condition(audio, 150, cfg, params))
    shifted = np.asarray(audio_condition(audio[640:], 150, cfg, params))
    chex.assert_shape(orig, (150, 10, 5, 16))
    audio_len = len(audio) // 640  # 150; the shifted clip covers 149 frames
    assert np.all(shifted[audio_len - 1:] == 0) and not np.all(orig[audio_len - 1] == 0)
    # shifted frame f <-> original frame f + 1, for the shifted clip's frames 3 ... audio_len - 2 (frames 0-2 reach
    # the clip start: reflect padding of the STFT, the conv receptive field, the prepended zero steps)
    lo, hi = 3, audio_len - 1
    err = rel_l2(shifted[lo:hi], orig[lo + 1:hi + 1])
    print(f"end-to-end one-frame shift (local encoder): rel L2 {err:.2e}")
    assert err < 1e-5
    # the same comparison with the real (global) encoder is far from equal
    g_orig = np.asarray(audio_condition(audio, 150, cfg, full))
    g_shift = np.asarray(audio_condition(audio[640:], 150, cfg, full))
    assert rel_l2(g_shift[lo:hi], g_orig[lo + 1:hi + 1]) > 1e-3


def test_custom_end_to_end_matches_reference_pipeline(fe80, tiny4):
    """HunyuanCustom's ``get_audio_feature`` + ``encode_audio`` restated in torch (first 3000 mel frames, stacked
    ``hidden_states``, 4 zero steps, rows [2f, 2f+10) for the audio's frames, zero frames up to the video length)
    against ``audio_condition(task="custom")`` with the same random whisper-tiny-shaped encoder."""
    cfg, enc, params = tiny4
    audio = chirp(31.0, seed=3)  # two chunks; only the first is encoded
    num_frames = 129
    audio_len = len(audio) // 640
    mel = torch.from_numpy(reference_log_mel(fe80, audio).T.copy())  # [80, 6000]
    with torch.inference_mode():
        states = torch.stack(enc(mel[None, :, :3000], output_hidden_states=True).hidden_states, dim=2)
    states = torch.cat([torch.zeros_like(states[:, :4]), states], dim=1)
    frames = [states[0, 2 * f:2 * f + 10] for f in range(min(num_frames, audio_len))]
    ref = torch.stack(frames).numpy()
    ref = np.concatenate([ref, np.zeros((num_frames - len(frames),) + ref.shape[1:], ref.dtype)])
    ours = np.asarray(audio_condition(audio, num_frames, cfg, params, task="custom"))
    chex.assert_shape(ours, (129, 10, 5, 16))
    err = rel_l2(ours, ref)
    print(f"custom end to end vs the torch reference pipeline: rel L2 {err:.2e}")
    assert err < 1e-4
    # shorter audio than video: zero frames at the end
    short = np.asarray(audio_condition(audio[:640 * 50 + 17], num_frames, cfg, params))
    assert np.all(short[50:] == 0) and not np.all(short[49] == 0)


def test_humo_end_to_end_matches_reference_pipeline(fe80):
    """HuMo's ``AudioProcessor.preprocess`` + ``get_audio_emb_window`` restated in torch (every 3000-frame chunk
    encoded, states concatenated and cut to 2 * audio_len, 8/8/8/8 + last, 50 -> 25 Hz) against
    ``audio_condition(task="humo")``, with a random 32-layer encoder (33 states, as whisper-large-v3)."""
    cfg = tiny_cfg(32)
    enc = torch_encoder(cfg, 1)
    params = whisper_encoder_from_torch(enc.state_dict(), cfg)
    audio = chirp(31.0, seed=4)
    audio_len = len(audio) // 640
    mel = torch.from_numpy(reference_log_mel(fe80, audio).T.copy())[None]
    with torch.inference_mode():
        chunks = [torch.stack(enc(mel[:, :, i:i + 3000], output_hidden_states=True).hidden_states, dim=2)
                  for i in range(0, mel.shape[-1], 3000)]
    states = torch.cat(chunks, dim=1)[:, :2 * audio_len]
    ref = torch_humo_windows(torch_humo_features(states, audio_len), 97).numpy()
    ours = np.asarray(audio_condition(audio, 97, cfg, params, task="humo"))
    chex.assert_shape(ours, (25, 8, 5, 16))
    err = rel_l2(ours, ref)
    print(f"humo end to end vs the torch reference pipeline: rel L2 {err:.2e}")
    assert err < 1e-4
    # the whole-clip features cover both chunks: the encoder states of chunk 2 are used (audio_len > 750)
    states_jax = encoder_states(log_mel(audio), cfg, params)
    chex.assert_shape(states_jax, (3000, 33, 16))
    feats = humo_audio_features(states_jax, audio_len)
    chex.assert_shape(feats, (audio_len, 5, 16))
    np.testing.assert_allclose(np.asarray(feats), torch_humo_features(states, audio_len).numpy(),
                               rtol=1e-4, atol=1e-4)


def test_audio_condition_accepts_a_path(tmp_path, tiny4):
    cfg, _, params = tiny4
    ints = np.round(chirp(2.0) * 32767).astype(np.int16)
    path = tmp_path / "voice.wav"
    write_wav_int16(path, ints, SR)
    from_path = np.asarray(audio_condition(path, 60, cfg, params))
    from_array = np.asarray(audio_condition(ints.astype(np.float32) / 32768.0, 60, cfg, params))
    np.testing.assert_array_equal(from_path, from_array)
    chex.assert_shape(from_path, (60, 10, 5, 16))
    assert np.all(from_path[50:] == 0)  # 2 s = 50 frames
    avatar = np.asarray(audio_condition(path, 60, cfg, params, task="avatar"))
    assert 0 < rel_l2(avatar, from_path) < 1e-2  # float16 log-mel rounding only
    with pytest.raises(ValueError, match="task"):
        audio_condition(path, 60, cfg, params, task="nope")
