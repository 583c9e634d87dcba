"""malaria-edge: offline malaria screening of thin blood-smear cell images on a Raspberry Pi."""

__version__ = "0.1.0"
