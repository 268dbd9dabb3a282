"""Fine-tuning: config, data, a method table, the trainer, jobs and runs, one run-result record, and the session
controller the Fine-tune tab calls."""
