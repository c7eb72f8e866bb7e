"""Fine-tuning: LoRA training of a served model on a tenant's clips, with checkpoints that resume bit-identically."""
