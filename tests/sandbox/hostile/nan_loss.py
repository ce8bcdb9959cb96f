# Attack: training diverges; the loss goes NaN and so does the metric.
import torch

w = torch.tensor([1.0], requires_grad=True)
for _ in range(50):
    loss = (w * 1e30) ** 2
    loss.backward()
    with torch.no_grad():
        w -= 1e30 * w.grad
print(f"loss {loss.item()}")
print("---")
print(f"val_bpb: {float('nan')}")
print("training_seconds: 1.0")
