"""Real GPUs on this machine: NVML (nvidia-ml-py) first, `nvidia-smi` second."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    memory_bytes: int
    uuid: str

    @property
    def product_label(self) -> str:
        """As NVIDIA's feature discovery writes nvidia.com/gpu.product: spaces become dashes."""
        return self.name.strip().replace(" ", "-")


def detect_gpus() -> list[GpuDevice]:
    """Every GPU NVML or nvidia-smi can see; an empty list when there are none (or no driver)."""
    devices = _from_nvml()
    return devices if devices is not None else _from_nvidia_smi()


def _from_nvml() -> list[GpuDevice] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None  # no driver: not an error, just no GPUs here
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            devices.append(
                GpuDevice(
                    index,
                    name.decode() if isinstance(name, bytes) else name,
                    int(memory),
                    uuid.decode() if isinstance(uuid, bytes) else uuid,
                )
            )
        return devices
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[GpuDevice]:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    result = subprocess.run(
        [binary, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        return []
    devices = []
    for line in result.stdout.strip().splitlines():
        index, name, memory_mib, uuid = (part.strip() for part in line.split(","))
        devices.append(GpuDevice(int(index), name, int(float(memory_mib)) * 2**20, uuid))
    return devices
