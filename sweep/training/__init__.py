"""The training side: the single-example loop and its stopping rules, its arithmetic precision, the
fused optimizer step, the batched engine, worker processes, and the plan that picks among them on
the hardware a job was given."""
