"""LSTM-autoencoder anomaly detection for metric streams: the library half.

Front ends (the ``anomaly`` CLI, the Prefect flows in ``flows/``) are thin
layers over these modules; nothing here imports Prefect. Start with
:class:`anomaly.core.detector.LSTMAutoencoderDetector` and
:class:`anomaly.core.config.DetectorConfig`.
"""

__version__ = "0.1.0"
