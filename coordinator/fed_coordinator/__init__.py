"""fed-coordinator: the server side of the federated camera fleet (TensorFlow lives here)."""

__version__ = "0.1.0"
