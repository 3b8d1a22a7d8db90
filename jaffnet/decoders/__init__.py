from jaffnet.decoders.jaff_decoder import JAFFDecoder

__all__ = ["JAFFDecoder"]
