"""Entry points: camingest (main.py), camingest-capture (capture.py), camingest-record
(record.py) and the check command. The only place that prints and picks exit codes."""
