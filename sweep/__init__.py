"""Loss-to-correct sweeps: how hard is it to fine-tune a pretrained classifier out of each mistake."""
