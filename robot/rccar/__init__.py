"""rccar track: FastRLAP-style lap learning from one slow demonstration (see robot/rccar/track.py)."""
