"""The `shapes` domain: procedural captioned scenes, a prompt-adherence scorer, and the
training recipe of the small rectified-flow one-step student in students/shapes-rf."""
