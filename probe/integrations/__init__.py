"""One-line attachments for Lightning and the Hugging Face Trainer (imported on use)."""
