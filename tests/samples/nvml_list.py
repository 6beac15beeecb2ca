"""Lists the GPUs as pynvml-based tools (gpustat, nvitop) do, through PyPI's nvidia-ml-py
(pynvml) and whatever libnvidia-ml.so.1 the loader finds. Prints one line per device and
exits 0; a failure raises pynvml's NVMLError (exit status 1)."""

import os
import pynvml

pynvml.nvmlInit()
print("driver", pynvml.nvmlSystemGetDriverVersion())
print("cuda", pynvml.nvmlSystemGetCudaDriverVersion_v2())
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    pci = pynvml.nvmlDeviceGetPciInfo(h)
    util = pynvml.nvmlDeviceGetUtilizationRates(h)
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
    assert pynvml.nvmlDeviceGetHandleByUUID(pynvml.nvmlDeviceGetUUID(h)) is not None
    assert any(p.pid == os.getpid() for p in procs), procs
    print(
        f"device {i}: {pynvml.nvmlDeviceGetName(h)} {pynvml.nvmlDeviceGetUUID(h)} "
        f"bus {pci.busId} cc {major}.{minor} memory {mem.total >> 20} MiB "
        f"({mem.used >> 20} MiB used) util {util.gpu}% processes {len(procs)}"
    )
pynvml.nvmlShutdown()
