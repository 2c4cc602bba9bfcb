"""Preview images during training: the prompts file, the samplers, drawing, and when to draw."""
