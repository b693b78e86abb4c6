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


class GPUDeviceLost(GPUError):
    """The GPU device was lost (driver reset, another tab, a laptop switching GPUs, or
    device.destroy()); the engine must re-initialise before any further GPU work."""
