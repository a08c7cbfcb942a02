"""The `diag` track: a built-in diagnostic task that exercises the LM loop end to end.

A tiny text-only Qwen2 (transformers' own classes, built from a config) with a byte-level BPE
tokenizer trained here, on verifiable digit tasks (addition, reversal); warm-up SFT, then GRPO.
"""
