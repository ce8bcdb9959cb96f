# Control: a well-behaved script. Its summary must be read back exactly.
print("training...")
print("---")
print("val_bpb: 1.234567")
print("training_seconds: 0.5")
print("peak_mem_mb: 10.0")
