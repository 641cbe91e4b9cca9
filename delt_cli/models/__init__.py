"""Loading models, tokenizers and encoders: short names for the offline assets, local directories, GGUF files, configs, cached hub ids (never the network)."""
