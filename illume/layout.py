"""The names of the files and folders that pass between processes: the export directory
(connector -> training), the run directory (training job) and the adapter directory (training
job -> backend, connector). Writer and reader both take the name from here."""
from __future__ import annotations

ADAPTER_META = "illume_adapter.json"  # written next to a trained adapter (training job)
