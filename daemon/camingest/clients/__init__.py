"""What users run beside the daemon, on top of the public client libraries: frame sources
for camingest-capture (testsrc, file, V4L2, RTSP) and the recorder of camingest-record."""
