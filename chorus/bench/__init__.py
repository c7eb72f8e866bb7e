"""``chorus bench``: a load generator comparing chorus with baseline TTS servers over real HTTP on 127.0.0.1.

corpus (the texts), servers (start/stop the systems), client (one request), player (underrun simulation),
workloads (burst and live), report (medians, capacity, ratios, tables), output (files), main (the command).
"""
