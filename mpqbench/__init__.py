"""mpqbench: one pipeline to compare mixed-precision quantization methods."""

__version__ = "0.1.0"
