"""Training stage: data, the compact MobileNetV2, training and evaluation (needs the `train` extra)."""
