"""Error codes and constants of ACL that the simulator returns (acl-venc.md §3, §1.3)."""

from __future__ import annotations

SUCCESS = 0
INVALID_PARAM = 100000
UNINITIALIZE = 100001
REPEAT_INITIALIZE = 100002
THREAD_NOT_SUBSCRIBE = 100035
WAIT_CALLBACK_TIMEOUT = 100036
BAD_ALLOC = 200000
INVALID_DEVICE = 200002
FAILURE = 500001
RT_CONTEXT_NULL = 107002
RT_INTERNAL_ERROR = 507000
RT_REPORT_TIMEOUT = 507012
RT_AICPU_EXCEPTION = 507018

# aclrtMemcpyKind: HOST_TO_HOST .. DEVICE_TO_DEVICE, DEFAULT (newer CANN)
MEMCPY_KINDS = range(5)
ACL_DEVICE = 0
ACL_HOST = 1

PIXEL_NV12 = 1
PIXEL_NV21 = 2
ENTYPES = range(4)  # H265 main, H264 baseline, main, high

# What the simulator does where real hardware would block forever (a hung encoder): EOS and
# destroy wait this long for outstanding callbacks, then give up so that tests end.
DRAIN_WAIT_S = 2.0
