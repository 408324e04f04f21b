"""fed_common: what two or more of the fleet's processes exchange or share, defined once.

No TensorFlow and no Flower here: this package is installed on the Pis and the coordinator
alike, and every contract between processes (heartbeat, image store and its index,
node-config, last-training record) is a typed model in one of its modules.
"""
