"""The models room: the registry on disk, the Keras/TFLite builds, the champion gate and the
policy that decides which model is the champion (status, promote, rollback)."""
