"""twistd plugin: ``twistd -n dlmsd --config etc/dlmsd.toml``.

Glue only: options and makeService live in `dlmsd.service.maker`; the same
service maker backs ``dlmsd run`` (which needs no plugin discovery).
"""

from __future__ import annotations

from dlmsd.service.run_cli import service_maker

dlmsd = service_maker()
