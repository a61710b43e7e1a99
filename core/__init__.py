"""tumorsweep: ablation studies of synthetic liver-tumour training with Ray, Optuna and MLflow."""

__version__ = "0.1.0"
