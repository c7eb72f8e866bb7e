"""Qwen3-TTS backend (PyPI ``qwen-tts``): import shims, a tiny random-weight model for tests."""
