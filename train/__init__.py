"""Training: one shared trainer, thin per-stage entry points (stage1-3, finetune16) and their YAML configs."""
