"""The harness: data, model, train/eval loop, metrics, memory, MLflow tracking, CLIs."""
