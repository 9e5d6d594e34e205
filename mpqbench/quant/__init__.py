"""Quantizers, observers and (to come) quantized modules and policies."""
