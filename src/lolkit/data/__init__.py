"""Records: the data contract, validation, tokenisation and batching."""
