"""fed-agent: the Raspberry Pi daemon. Never imports TensorFlow (the Pi side has none)."""

__version__ = "0.1.0"
