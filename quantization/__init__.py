"""Quantization stage: TFLite conversion and benchmarking (needs the `train` extra)."""
