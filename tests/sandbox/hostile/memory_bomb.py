# Attack: grow memory without end; the kernel must kill us at the memory limit.
chunks = []
while True:
    chunks.append(bytearray(32 * 2**20))
    chunks[-1][:: 4096] = b"x" * len(chunks[-1][:: 4096])
