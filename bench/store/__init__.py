"""Where results live: MLflow conventions, the suite's lease, the store client, checkpoints, UI addresses."""
