"""Qwen3-TTS backend (PyPI ``qwen-tts``) and its import shims; the tiny test model is in chorus.testing."""
