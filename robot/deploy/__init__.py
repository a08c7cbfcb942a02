"""Deploying policies to vehicles (issue: ONNX export, on-vehicle runtime, serial protocol).

Import rule, enforced by import-linter in CI: the on-vehicle code here imports numpy,
onnxruntime, pyserial and OpenCV only -- no torch, no pybullet, no training code -- so it installs
on a small vehicle computer. The exporter (`export.py`, `cli_export.py`: it needs torch) is the one
listed exception.
"""
