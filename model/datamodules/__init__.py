"""Lightning data modules: datasets, samplers, normalisation and augmentation wired together."""
