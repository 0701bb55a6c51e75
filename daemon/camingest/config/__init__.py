"""The configuration: the pydantic model, YAML loading with line numbers, endpoint rules.

Imports only wire/; never PyAV, pyACL or the machine (that is service/preflight.py)."""
