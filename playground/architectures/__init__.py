"""Model facts, tokenisation, attention maps and pre-training objectives (the Architectures tab's logic)."""
