# Attack: one block, the key repeated; the last value is the forged one.
print("---")
print("val_bpb: 2.5")
print("training_seconds: 1.0")
print("val_bpb: 0.1")
