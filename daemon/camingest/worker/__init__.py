"""The worker process, one per stream: the ingest server, frame conversion, the encoder
channel (encoders/) and the loop that ties them together (main.py)."""
