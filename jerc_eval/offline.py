"""Whether a hub can be reached: the one check every hub-loading adapter makes before it downloads."""
from __future__ import annotations

import os
import socket


def offline_reason(host: str) -> str | None:
    """Why ``host`` cannot be used (HF_HUB_OFFLINE / JERC_EVAL_OFFLINE set, or no connection in 3 s), else None."""
    for var in ("HF_HUB_OFFLINE", "JERC_EVAL_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var]}"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} is unreachable ({type(exc).__name__})"
    return None
