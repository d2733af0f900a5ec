"""dlmsd: a DLMS/COSEM head-end daemon and library.

The few things library users need are exported here; everything else lives
in `dlmsd.protocol` (the sans-io core), `dlmsd.cosem`, `dlmsd.service` and
`dlmsd.client`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
