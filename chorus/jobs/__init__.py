"""Batch jobs: many lines synthesised in the background, results in the blob store, a webhook at the end."""
