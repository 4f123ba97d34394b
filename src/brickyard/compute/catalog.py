"""What this install offers: runtimes (spark-versions) and node types."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib.metadata import version

SPARK_VERSION = version("pyspark")
SCALA = "2.13"


@dataclass(frozen=True)
class Runtime:
    key: str
    name: str
    ml: bool


RUNTIMES = (
    Runtime("17.3.x-cpu-ml-scala2.13", f"17.3 LTS ML (Brickyard; Apache Spark {SPARK_VERSION}, Scala {SCALA})", True),
    Runtime("17.3.x-scala2.13", f"17.3 LTS (Brickyard; Apache Spark {SPARK_VERSION}, Scala {SCALA})", False),
)
DEFAULT_ML_RUNTIME = RUNTIMES[0]
DATABRICKS_KEY_RE = re.compile(
    r"^(?P<major>\d+)\.(?P<minor>\d+|x)\.x-(?P<flavor>(cpu-ml|gpu-ml|photon|ml)-)?scala(?P<scala>2\.1[0-3])$"
)


def resolve_runtime(key: object) -> tuple[Runtime, str | None]:
    """The runtime serving a spark_version key, and a note when it is not an exact match."""
    if not isinstance(key, str) or not key:
        raise ValueError("spark_version is required, e.g. " + DEFAULT_ML_RUNTIME.key)
    for runtime in RUNTIMES:
        if runtime.key == key:
            return runtime, None
    m = DATABRICKS_KEY_RE.match(key)
    if not m:
        raise ValueError(
            f"spark_version {key!r} is not a runtime key; this workspace offers "
            + ", ".join(r.key for r in RUNTIMES)
        )
    ml = bool(m.group("flavor")) and "ml" in m.group("flavor")
    runtime = RUNTIMES[0] if ml else RUNTIMES[1]
    note = f"Runtime {key} is served by {runtime.key} ({runtime.name})."
    if m.group("flavor") and m.group("flavor").startswith("gpu"):
        note += " No GPUs here: the CPU build is used."
    return runtime, note


@dataclass(frozen=True)
class NodeType:
    node_type_id: str
    num_cores: float
    memory_mb: int
    description: str
    category: str = "General Purpose"


NODE_TYPES = (
    NodeType("local.small", 1, 2048, "Local process: 1 core, 2 GB", "Local"),
    NodeType("local.medium", 2, 4096, "Local process: 2 cores, 4 GB", "Local"),
    NodeType("local.large", 4, 8192, "Local process: 4 cores, 8 GB", "Local"),
    NodeType("Standard_DS3_v2", 4, 14336, "Azure Standard_DS3_v2: 4 cores, 14 GB"),
    NodeType("Standard_DS4_v2", 8, 28672, "Azure Standard_DS4_v2: 8 cores, 28 GB"),
    NodeType("Standard_DS5_v2", 16, 57344, "Azure Standard_DS5_v2: 16 cores, 56 GB"),
    NodeType("Standard_F4s", 4, 8192, "Azure Standard_F4s: 4 cores, 8 GB", "Compute Optimized"),
    NodeType("Standard_E4ds_v4", 4, 32768, "Azure Standard_E4ds_v4: 4 cores, 32 GB", "Memory Optimized"),
    NodeType("i3.xlarge", 4, 31232, "AWS i3.xlarge: 4 cores, 30.5 GB", "Storage Optimized"),
    NodeType("m5d.large", 2, 8192, "AWS m5d.large: 2 cores, 8 GB"),
)
NODE_TYPES_BY_ID = {n.node_type_id: n for n in NODE_TYPES}
SMALLEST_LOCAL = NODE_TYPES[0]


def node_type(node_type_id: object) -> NodeType:
    if not isinstance(node_type_id, str) or node_type_id not in NODE_TYPES_BY_ID:
        raise ValueError(
            f"node_type_id {node_type_id!r} is not offered; see clusters/list-node-types "
            f"(e.g. {SMALLEST_LOCAL.node_type_id}, Standard_DS3_v2)"
        )
    return NODE_TYPES_BY_ID[node_type_id]


def host_capacity() -> tuple[int, int]:
    """Cores and memory (MB) of this host."""
    cores = os.cpu_count() or 1
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_mb = int(pages / (1024 * 1024))
    except (ValueError, OSError, AttributeError):
        mem_mb = 4096
    return cores, mem_mb


def capped(nt: NodeType) -> tuple[int, int, str | None]:
    """Cores and memory a node of this type gets here, and a warning when capped."""
    cores, mem_mb = host_capacity()
    want_cores, want_mem = int(max(nt.num_cores, 1)), nt.memory_mb
    # A node process gets at most the host's cores and half its memory.
    got_cores, got_mem = min(want_cores, cores), min(want_mem, mem_mb // 2)
    note = None
    if (got_cores, got_mem) != (want_cores, want_mem):
        note = (f"Node type {nt.node_type_id} asks for {want_cores} cores and {want_mem} MB; this host gives "
                f"{got_cores} cores and {got_mem} MB per node.")
    return got_cores, got_mem, note


def spark_versions_response() -> dict:
    return {"versions": [{"key": r.key, "name": r.name} for r in RUNTIMES]}


def node_types_response() -> dict:
    return {
        "node_types": [
            {
                "node_type_id": n.node_type_id,
                "instance_type_id": n.node_type_id,
                "memory_mb": n.memory_mb,
                "num_cores": n.num_cores,
                "num_gpus": 0,
                "description": n.description,
                "category": n.category,
                "is_deprecated": False,
                "is_hidden": False,
                "support_port_forwarding": True,
                "supports_elastic_disk": False,
                "display_order": i,
                "node_instance_type": {
                    "instance_type_id": n.node_type_id,
                    "local_disks": 1,
                    "local_disk_size_gb": 64,
                },
                "node_info": {"status": ["available"]},
            }
            for i, n in enumerate(NODE_TYPES)
        ]
    }
