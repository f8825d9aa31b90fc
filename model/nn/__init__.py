"""The msGFM network: patch embeddings, Swin encoder with sparse MoE, SimMIM decoders."""
