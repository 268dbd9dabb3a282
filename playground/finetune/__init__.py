"""Fine-tuning data, methods, jobs and runs (the Fine-tune tab's logic)."""
