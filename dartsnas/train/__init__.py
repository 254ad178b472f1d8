"""Training loops: the bilevel searches (conv, recurrent, a user model's choices), the final
networks' training, and the machinery they share (the run loop, run directories, checkpoints)."""
