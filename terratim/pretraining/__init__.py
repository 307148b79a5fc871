"""Pretraining from scratch: tokenizer training and the 4M-style masked multimodal token objective."""
