"""Fine-tuning jobs: LLaMA-Factory runs in their own venv (.venv-trainer), SwanLab tracking, deployment."""
