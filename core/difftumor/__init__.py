"""DiffTumor in a study: the generator's training job (a Ray Train run logged to MLflow), the
sweep's auto-training of it, and a trial's checks and transform. The generator itself (models,
sampling, storage, the synthesis transform) is `tumorsweep.generative`, which knows nothing of
Ray, MLflow or a trial's config."""
