"""Export a CLAP model as a transformers CLAP directory, or its two encoders as ONNX files.

    python -m clap_train.export CHECKPOINT OUT_DIR [--format onnx]

CHECKPOINT is anything `clap_train.load_model` reads (clap_train .ckpt, LAION .pt, transformers
directory). The transformers directory (`clap_train/export_hf.py`) loads with
`ClapModel.from_pretrained(OUT_DIR)` and `ClapProcessor.from_pretrained(OUT_DIR)`; `--format onnx`
writes audio_encoder.onnx + text_encoder.onnx (`clap_train/export_onnx.py`). The arguments are checked
before torch is imported, so a wrong path is reported in seconds (`clap_train.export: error: ...`, status 2).
"""

from __future__ import annotations

from pathlib import Path

from clap_train.cli import ArgumentParser, reporting_user_errors


def check_arguments(checkpoint: str, out_dir: str) -> None:
    """Raise FileNotFoundError / NotADirectoryError naming the argument: a missing CHECKPOINT, an OUT_DIR
    that is a file."""
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"CHECKPOINT {checkpoint} does not exist")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise NotADirectoryError(f"OUT_DIR {out_dir} is a file, not a directory")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="clap_train.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="clap_train .ckpt, LAION .pt or transformers CLAP directory")
    parser.add_argument("out_dir", help="directory to write the transformers CLAP (or ONNX) files into")
    parser.add_argument("--format", choices=("transformers", "onnx"), default="transformers",
                        help="onnx: audio_encoder.onnx + text_encoder.onnx (clap_train/export_onnx.py)")
    args = parser.parse_args(argv)
    with reporting_user_errors(parser.prog):
        check_arguments(args.checkpoint, args.out_dir)
        # why: torch loads only after the checks
        from clap_train.checkpoints.load import load_model

        model = load_model(args.checkpoint)
        if args.format == "onnx":
            from clap_train.export_onnx import export_onnx  # why: onnx is an optional extra

            out = export_onnx(model, args.out_dir)
        else:
            from clap_train.export_hf import export_hf  # why: torch loads only after the checks

            out = export_hf(model, args.out_dir)
    print(f"wrote {sorted(p.name for p in out.iterdir())} to {out}")


if __name__ == "__main__":
    main()
