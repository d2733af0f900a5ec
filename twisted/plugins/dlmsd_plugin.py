"""twistd plugin: ``twistd -n dlmsd --config etc/dlmsd.toml``.

Glue only: options and makeService live in `dlmsd.service.maker`.
"""

from __future__ import annotations

from twisted.application.service import ServiceMaker

dlmsd = ServiceMaker(  # type: ignore[no-untyped-call]
    "dlmsd",
    "dlmsd.service.maker",
    "DLMS/COSEM push daemon: receives, authenticates, decodes and stores meter pushes",
    "dlmsd",
)
