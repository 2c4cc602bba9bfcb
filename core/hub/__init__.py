"""Publishing to the Hugging Face Hub: the model card (``model_card``) and the uploads (``upload``).

Both import huggingface_hub and the trainer's file tools lazily, inside the functions, so the
utilities panel that reaches them through ``core.utilities_manager`` opens fast.
"""
