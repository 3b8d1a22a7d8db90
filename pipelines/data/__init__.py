"""Data for JAFFNet: the synthetic default dataset (``synth``, ``defects``, ``textures``),
ingestion of the original layouts into Parquet with Ray Data (``layouts``, ``codec``,
``ingestion``, ``splits``, ``publish``) and the paired-augmentation training input
(``dataset``, ``augment``, ``epochs``).

Import from the modules: this package stays empty so ``jaffnet --help`` loads no numpy or cv2.
"""
