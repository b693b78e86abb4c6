"""Many dispatches, one command encoder, one submit.

Recording a whole step into one batch and handing it to the backend in one call keeps the
per-dispatch cost low, and a `Recording` of a fixed graph (a decode step) is encoded once and
replayed every step.

A long graph recorded once (a prefill, a training step) streams instead (`stream=True`): the
commands recorded so far are submitted in growing chunks while Python records the rest, so the
GPU runs the first layers while the host is still encoding the last ones. Recorded whole, the
GPU sat idle for the whole recording: on an H200 mamba-1.4b's 1,024-token prefill took ~25 ms of
host recording (natively; more under Pyodide) before any of its ~130 ms of GPU work started.
One queue runs the chunks in submit order, so the result is the same as one submit.
"""
MAX_WORKGROUPS = 65535
# A streaming batch submits when it holds FIRST_CHUNK dispatches, then at twice the last chunk,
# up to MAX_CHUNK: the GPU starts early, and a long graph costs a few submits, not hundreds.
FIRST_CHUNK = 32
MAX_CHUNK = 256


def chunk_sizes(dev=None):
    """(first, max) chunk of a streaming batch: FIRST_CHUNK and MAX_CHUNK, or the bench variants'
    MAMBAWEB_STREAM_FIRST / MAMBAWEB_STREAM_MAX (powers of two from 1 to 4096, first <= max;
    anything else refused by name) -- whether a prefill's recording keeps ahead of the GPU is
    the host's matter, so it is measured per host."""
    from py_engine.gpu.settings import pick
    sizes = [1 << i for i in range(13)]
    first = pick(dev, "stream_first", "MAMBAWEB_STREAM_FIRST", sizes, lambda: FIRST_CHUNK)
    most = pick(dev, "stream_max", "MAMBAWEB_STREAM_MAX", sizes, lambda: MAX_CHUNK)
    if first > most:
        raise ValueError(f"MAMBAWEB_STREAM_FIRST ({first}) must not exceed MAMBAWEB_STREAM_MAX "
                         f"({most})")
    return first, most


class Batch:
    def __init__(self, device, stream=False):
        self.device = device
        self.commands = []
        self.stream = stream
        self._pending = 0                # dispatches among self.commands
        self._flushed = 0                # dispatches already submitted (streaming)
        self._first, self._max = chunk_sizes(device) if stream else (FIRST_CHUNK, MAX_CHUNK)
        self._chunk = self._first

    def dispatch(self, pipeline, bind_group, x, y=1, z=1):
        if x > MAX_WORKGROUPS or y > MAX_WORKGROUPS or z > MAX_WORKGROUPS:
            raise ValueError(f"dispatch ({x},{y},{z}) exceeds {MAX_WORKGROUPS} workgroups per "
                             "dimension; the op must fold the grid into y/z")
        if x and y and z:
            self.commands.append((0, pipeline, bind_group, x, y, z))
            self._pending += 1
            if self.stream and self._pending >= self._chunk:
                self._submit_pending()
                self._chunk = min(self._max, 2 * self._chunk)

    def run(self, shader, entry, resources, x, y=1, z=1, constants=None):
        """Look up the pipeline, bind `resources`, and record a dispatch."""
        pipe = self.device.pipeline(shader, entry, constants)
        self.dispatch(pipe, self.device.bind(pipe, resources), x, y, z)

    def copy(self, src, src_offset, dst, dst_offset, nbytes):
        self.commands.append((1, src, src_offset, dst, dst_offset, nbytes))

    @property
    def dispatch_count(self):
        """Dispatches recorded into this batch (streamed ones included)."""
        return self._flushed + self._pending

    def _submit_pending(self):
        if self.commands:
            self.device.submit_commands(self.commands, dispatches=self._pending)
        self._flushed += self._pending
        self.commands = []
        self._pending = 0

    @property
    def streamed(self):
        """Whether part of this batch already went to the GPU (a streaming batch's chunks)."""
        return self._flushed > 0

    def discard(self):
        """Drop the commands not yet submitted (a recording that failed part-way)."""
        self.commands = []
        self._pending = self._flushed = 0
        self._chunk = self._first

    def submit(self):
        """Submit what is left; the batch then starts afresh (counts, chunk sizes)."""
        self._submit_pending()
        self._flushed = 0
        self._chunk = self._first

    def record(self):
        """Freeze these commands into a Recording that replays with one backend call."""
        if self._flushed:
            raise RuntimeError("a streaming batch already submitted part of its commands: "
                               "record from device.batch() (stream=False)")
        rec = Recording(self.device, self.commands)
        self.commands = []
        self._pending = 0
        return rec


class Recording:
    def __init__(self, device, commands):
        self.device = device
        self.commands = list(commands)
        self.dispatch_count = sum(1 for c in commands if c[0] == 0)
        self._encoded = device._encode_commands(self.commands)
        self._prefix_dispatches = {}     # replay(count): count -> dispatches among them

    def replay(self, count=None):
        """Submit the recorded commands again, or only the first `count` of them (a prefix
        of a recording is a recording: Generator's groups of fewer steps replay the first
        steps of the full group's)."""
        if count is None or count >= len(self.commands):
            return self.device.submit_commands(self.commands, self.dispatch_count, self._encoded)
        dispatches = self._prefix_dispatches.get(count)
        if dispatches is None:
            dispatches = self._prefix_dispatches[count] = \
                sum(1 for c in self.commands[:count] if c[0] == 0)
        self.device.submit_commands(self.commands, dispatches, self._encoded, count=count)
