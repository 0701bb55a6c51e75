"""The client side: the capture library (CaptureClient and its session), the subscriber
library, the frame sources of camingest-capture (testsrc, file, V4L2, RTSP) and the recorder of
camingest-record. camingest.capture and camingest.subscribe are their public names."""
