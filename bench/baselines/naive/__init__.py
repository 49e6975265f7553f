"""The naive baseline: the reference design's presence counting on the same Channels stack (``consumer.py``)."""
