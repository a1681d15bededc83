"""Speech encoders as Flax modules that return every hidden state in one pass."""

from speechmi_jax.encoders.base import Encoder, EncoderOutput, bucket_length
from speechmi_jax.encoders.registry import load_encoder

__all__ = ["Encoder", "EncoderOutput", "bucket_length", "load_encoder"]
