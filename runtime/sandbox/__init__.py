"""The wall: the Docker engine, the images, the hardened container settings, and one trial's run
(executor -> supervisor -> outcome). Nothing here knows about runs, journals or LLMs."""
