"""The DST: section of a detectron2 config, by the path train/ and users' scripts import it from
(it lives in dst_dali.integrations.detectron2.config)."""
from .integrations.detectron2.config import (  # noqa: F401
                                             DST_DEFAULTS,
                                             add_dst_config,
                                             check_dst_config,
                                             load_config,
)
