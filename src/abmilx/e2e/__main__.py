"""CLI: python -m abmilx.e2e train --store PATH --splits CSV --fold K --out-dir DIR
--settings JSON --threads N [--kind e2e|c2c|ft]   (launch with torchrun for DDP)"""

from abmilx.e2e.patch_kinds import PATCH_KINDS, train
from abmilx.training.cli import train_command


def main(argv: list[str] | None = None) -> None:
    train_command(
        "python -m abmilx.e2e",
        "train encoder + MIL end to end",
        ("--store", "packed patch store (LMDB)"),
        train,
        argv,
        kinds=PATCH_KINDS,
    )


if __name__ == "__main__":
    main()
