"""Data for JAFFNet: the synthetic default dataset (``synth``, ``defects``, ``textures``),
ingestion of the original layouts into Parquet with Ray Data (``layouts``, ``ingestion``,
``splits``, ``publish``; images decoded by ``pipelines.codec``), of a decision log's reviewed
frames (``reviewed_frames``), and the paired-augmentation training input (``dataset``,
``augment``, ``epochs``).

Import from the modules: this package stays empty so ``jaffnet --help`` loads no numpy or cv2.
"""
