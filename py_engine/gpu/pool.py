"""A size-class buffer pool: buffers go back to the pool instead of being destroyed.

Size classes are 2^k and 1.5*2^k bytes (>= 256), so a request wastes at most a third and
the number of distinct classes stays small; a steady workload (a decode step, a training
step) reuses the same buffers forever and the GPU allocation count stops growing.
"""


def size_class(nbytes: int) -> int:
    n = max(256, int(nbytes))
    k = (n - 1).bit_length()  # 2^k >= n
    full = 1 << k
    three_halves = 3 << (k - 2) if k >= 2 else full  # 1.5 * 2^(k-1)
    return three_halves if three_halves >= n else full


class BufferPool:
    def __init__(self, create, track=False):
        self._create = create        # callable(nbytes) -> Buffer
        self._free = {}              # size class -> [Buffer]
        # track: remember every buffer made (a private pool hands them all back in drain())
        self._made = [] if track else None
        self.created = 0             # GPU buffers ever created through the pool
        self.in_use = 0

    def acquire(self, nbytes: int):
        cls = size_class(nbytes)
        free = self._free.get(cls)
        buf = free.pop() if free else None
        if buf is None:
            buf = self._create(cls)
            self.created += 1
            if self._made is not None:
                self._made.append(buf)
        self.in_use += 1
        return buf

    def forget(self, buf) -> None:
        """A buffer this pool handed out that its holder destroys instead of giving back."""
        self.in_use -= 1
        if self._made is not None:
            self._made = [b for b in self._made if b is not buf]

    def release(self, buf) -> None:
        self.in_use -= 1
        self._free.setdefault(buf.size, []).append(buf)

    def take_free(self):
        """Every free buffer, removed from the pool (the caller destroys them); buffers in use
        stay, and a tracking pool forgets the ones taken so drain() never returns them twice."""
        free = [b for bufs in self._free.values() for b in bufs]
        self._free.clear()
        if self._made is not None and free:
            taken = {id(b) for b in free}
            self._made = [b for b in self._made if id(b) not in taken]
        return free

    def drain(self):
        """Every buffer this (tracking) pool made, in use or free; the pool is empty after."""
        made = list(self._made or [])
        self._made = [] if self._made is not None else None
        self._free.clear()
        self.in_use = 0
        return made

    def stats(self) -> dict:
        return {"created": self.created, "in_use": self.in_use,
                "free": sum(len(v) for v in self._free.values()),
                "free_bytes": sum(k * len(v) for k, v in self._free.items())}
