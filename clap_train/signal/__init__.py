"""The signal path shared by models, data workers and inference: log-mel front end, waveform crop/pad and
int16 helpers, fusion features. A leaf: imports only torch, torchaudio and numpy."""
