"""Flower App for head/hardhat federated campaigns.

The ClientApp side must run with numpy, Pillow and a TFLite interpreter only: nothing in
this package may import TensorFlow (agents on Raspberry Pis never have it).
"""
