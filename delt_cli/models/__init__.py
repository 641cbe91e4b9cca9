"""Loading models and tokenizers: local directories, cached hub ids, GGUF files, configs."""
