# Attack: never finish; only the supervisor's deadline can end this.
import time

print("sleeping", flush=True)
time.sleep(100000)
