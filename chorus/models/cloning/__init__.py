"""Cloning a voice inside a backend: WORLD analysis (world), frame pairing and mixtures (alignment), the fitted
conversion (conversion, conversion_stream) and the stored envelope of a per-voice model (voice_model).

A backend's concern, so it lives with the models: the voice service registers and stores voices, the backend
turns a reference into its own per-voice model with these.
"""
