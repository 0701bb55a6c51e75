"""The main process: composition (runtime), supervision of the workers, the output fan-in
and XPUB, the control socket, status, metrics, systemd notification and preflight."""
