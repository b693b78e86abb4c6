"""Exceptions the GPU layer raises; each message says what happened and what to do."""


class GPUError(RuntimeError):
    """Base class for everything the GPU layer raises."""


class GPUUnavailable(GPUError):
    """No WebGPU: old browser, insecure origin, flag missing, or no adapter."""


class ShaderError(GPUError):
    """A WGSL file failed to compile or a pipeline failed to build."""


class GPUValidationError(GPUError):
    """The device reported a validation error (bad binding, size, usage...)."""


class DeviceLimitError(GPUError):
    """A buffer or binding exceeds what this device allows."""


class GPUOutOfMemory(GPUError):
    """The GPU could not allocate a buffer (the page says so and what to try)."""


# What a person can do about it, in the order most likely to help.
OUT_OF_MEMORY_ADVICE = ("use a smaller weight format such as q4, a smaller model, or close "
                        "other tabs that use the GPU")


def out_of_memory(what: str) -> GPUOutOfMemory:
    """The one sentence for every out-of-memory: `what` says when it happened
    ("allocating a 3.0 MiB buffer", "loading the weights of …")."""
    return GPUOutOfMemory(f"the GPU ran out of memory {what}: {OUT_OF_MEMORY_ADVICE}")


class GPUDeviceLost(GPUError):
    """The GPU device was lost (driver reset, another tab, a laptop switching GPUs, or
    device.destroy()); the engine must re-initialise before any further GPU work."""
