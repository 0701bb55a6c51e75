"""acl.media: the VENC (venc_*) and DVPP (dvpp_*) functions, as one namespace like pyACL's."""

from __future__ import annotations

from acl.dvpp import *  # noqa: F403
from acl.venc import *  # noqa: F403  (includes the generated venc_[gs]et_channel_desc_*)
