"""Training: the loop (train), the step builder (steps), optimizer and schedules (optim), losses,
mixup, checkpoints (checkpointing) and the logs (metrics_writer)."""
