# Attack: leave a special file in /out that a host reader would block on: KIND is "fifo" or "socket".
import os
import socket
import time

if "KIND" == "fifo":
    os.mkfifo("/out/pipe")
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind("/out/sock")
    s.listen(1)
time.sleep(60)
