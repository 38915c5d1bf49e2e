"""The model classes a stored config may name, by the `_target_` string it names them with.

`clap_train.checkpoints.build_model_from_config` builds models from checkpoint configs through these
dicts only (never by importing a stored string). A new tower is registered here, in its slot.
Old target strings stay as aliases so checkpoints written before a move keep loading.
"""

from __future__ import annotations

from clap_train.models.audio.htsat import HTSATEncoder
from clap_train.models.audio.pann import Cnn14Encoder
from clap_train.models.audio.whisper import WhisperEncoder
from clap_train.models.clap import CLAPModel
from clap_train.models.text.modernbert import ModernBertEncoder
from clap_train.models.text.roberta import RobertaEncoder
from clap_train.signal.frontend import LogMelFrontend
from clap_train.signal.whisper_frontend import WhisperFrontend

MODELS = {"clap_train.models.clap.CLAPModel": CLAPModel}
AUDIO_ENCODERS = {
    "clap_train.models.audio.htsat.HTSATEncoder": HTSATEncoder,
    "clap_train.models.audio.pann.Cnn14Encoder": Cnn14Encoder,
    "clap_train.models.audio.whisper.WhisperEncoder": WhisperEncoder,
}
TEXT_ENCODERS = {
    "clap_train.models.text.roberta.RobertaEncoder": RobertaEncoder,  # also XLM-R (htsat_tiny_xlmr)
    "clap_train.models.text.modernbert.ModernBertEncoder": ModernBertEncoder,
}
FRONTENDS = {
    "clap_train.signal.frontend.LogMelFrontend": LogMelFrontend,
    "clap_train.models.audio.frontend.LogMelFrontend": LogMelFrontend,  # its module before issue 12
    "clap_train.signal.whisper_frontend.WhisperFrontend": WhisperFrontend,
}
# the arguments of a class that are themselves built from a nested config, and the classes allowed there
NESTED = {CLAPModel: {"audio_encoder": AUDIO_ENCODERS, "text_encoder": TEXT_ENCODERS, "frontend": FRONTENDS}}
# arguments old checkpoints store that no constructor takes any more (tower init paths, now `init.*`)
RETIRED_ARGUMENTS = {HTSATEncoder: ("pretrained",), RobertaEncoder: ("pretrained",), CLAPModel: ("tokenizer_path",)}
