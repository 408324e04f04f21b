"""fed-coordinator: the server side of the federated camera fleet (TensorFlow lives here)."""

import os

# TensorFlow's C++ logging would bury our JSON log lines; oneDNN's reordered float math would
# make exports differ run to run. Both must be set before TensorFlow loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__version__ = "0.1.0"
