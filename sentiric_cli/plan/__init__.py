"""`sentiric plan`: what fits. The GGUF header (gguf.header, gguf.shards, gguf.remote for a model not downloaded),
the model facts llama.cpp derives from it (gguf.modelinfo), its memory accounting (memory, backends, usage: the
GPUs and host RAM), the devices (device), the speed a plan gives (speed), the choice (planner), llama.cpp's own dry
run (measure) and the command (command)."""
