"""icfrr_fast.training: train the retrieval backbones whose features ICFRR re-ranks.
"""
