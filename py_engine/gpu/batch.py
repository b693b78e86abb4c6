"""Many dispatches, one command encoder, one submit.

Engines like this are bound by command encoding, not kernels: recording a whole step into
one batch and handing it to the backend in one call keeps the per-dispatch cost low, and a
`Recording` of a fixed graph (a decode step) is encoded once and replayed every step.
"""
MAX_WORKGROUPS = 65535


class Batch:
    def __init__(self, device):
        self.device = device
        self.commands = []

    def dispatch(self, pipeline, bind_group, x, y=1, z=1):
        if x > MAX_WORKGROUPS or y > MAX_WORKGROUPS or z > MAX_WORKGROUPS:
            raise ValueError(f"dispatch ({x},{y},{z}) exceeds {MAX_WORKGROUPS} workgroups per "
                             "dimension; the op must fold the grid into y/z")
        if x and y and z:
            self.commands.append((0, pipeline, bind_group, x, y, z))

    def run(self, shader, entry, resources, x, y=1, z=1, constants=None):
        """Look up the pipeline, bind `resources`, and record a dispatch."""
        pipe = self.device.pipeline(shader, entry, constants)
        self.dispatch(pipe, self.device.bind(pipe, resources), x, y, z)

    def copy(self, src, src_offset, dst, dst_offset, nbytes):
        self.commands.append((1, src, src_offset, dst, dst_offset, nbytes))

    @property
    def dispatch_count(self):
        return sum(1 for c in self.commands if c[0] == 0)

    def submit(self):
        if self.commands:
            self.device.submit_commands(self.commands, dispatches=self.dispatch_count)
        self.commands = []

    def record(self):
        """Freeze these commands into a Recording that replays with one backend call."""
        rec = Recording(self.device, self.commands)
        self.commands = []
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
