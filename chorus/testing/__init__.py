"""Scaffolding for tests and benchmarks, never imported by the server at run time: tiny random-weight Qwen3-TTS
checkpoints (``qwen3_tiny``) built offline in the shape of the released ones."""
