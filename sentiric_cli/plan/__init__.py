"""`sentiric plan`: what fits. The GGUF header (gguf_header, shards), the model facts llama.cpp
derives from it (modelinfo), its memory accounting (memory, backends), the devices (device),
the choice (planner), llama.cpp's own dry run (measure) and the command (command)."""
